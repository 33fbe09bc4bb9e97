"""What the API's routes use, created once per process in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.group_commit import GroupCommit
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


async def get_clients(request: Request) -> ApiClients:
    # async: a plain def dependency would cost a thread-pool hop per request
    clients: ApiClients = request.app.state.clients
    return clients
