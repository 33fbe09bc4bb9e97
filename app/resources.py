"""Clients shared by every request, created once per process in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.items import ItemRepository
from app.publisher import TaskPublisher
from app.settings import Settings
from app.status import AsyncStatusStore


@dataclass
class Resources:
    settings: Settings
    mongo: AsyncMongoClient[dict[str, Any]]
    database: AsyncDatabase[dict[str, Any]]
    redis: aioredis.Redis
    status: AsyncStatusStore
    publisher: TaskPublisher
    items: ItemRepository


async def get_resources(request: Request) -> Resources:
    # async: a plain def dependency would cost a thread-pool hop per request
    resources: Resources = request.app.state.resources
    return resources
