"""What the API's routes use, created once per process in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.events import EventHub
from app.group_commit import GroupCommit
from app.health import SharedProbe
from app.items import ItemRepository
from app.publisher import TaskPublisher
from app.settings import Settings
from app.status import AsyncStatusStore


@dataclass
class ApiClients:
    """The API process's settings, clients and stores (the workers' are app.lifecycle's)."""

    settings: Settings
    mongo: AsyncMongoClient[dict[str, Any]]
    database: AsyncDatabase[dict[str, Any]]
    redis: aioredis.Redis
    status: AsyncStatusStore
    publisher: TaskPublisher
    submits: GroupCommit
    items: ItemRepository
    health: SharedProbe
    events: EventHub


def api_clients(request: Request) -> ApiClients:
    """The process's clients, for a route that takes the `Request`.

    Not a `Depends()`: FastAPI (0.165) solves a sub-dependency on every request,
    and the profile of a submit put about 5% of its CPU there (its
    `cast(Callable[..., Any], ...)` alone is evaluated per sub-dependency per
    request). A `Request` parameter costs nothing to solve.
    """
    clients: ApiClients = request.app.state.clients
    return clients
