"""Dependency probes for GET /health: concurrent, each bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis
from kombu import Connection
from pymongo import AsyncMongoClient


async def probe(check: Awaitable[Any], limit: float) -> str | None:
    """None when the check passed in time, else a short reason."""
    try:
        await asyncio.wait_for(check, limit)
    except TimeoutError:
        return f"no answer within {limit:g}s"
    except Exception as exc:  # any failure of a dependency is reported, not raised
        return (f"{exc.__class__.__name__}: {exc}".splitlines() or ["error"])[0][:200]
    return None


async def ping_mongodb(client: AsyncMongoClient[dict[str, Any]]) -> None:
    await client.admin.command("ping")


async def ping_redis(client: aioredis.Redis) -> None:
    await client.ping()


def _amqp_login(url: str, connect_timeout: float) -> None:
    with Connection(url, connect_timeout=connect_timeout) as conn:
        conn.ensure_connection(max_retries=0)


async def ping_rabbitmq(url: str, connect_timeout: float) -> None:
    # A real AMQP login (credentials and vhost), off the event loop.
    await asyncio.to_thread(_amqp_login, url, connect_timeout)


async def check_all(
    mongodb: Awaitable[Any], redis: Awaitable[Any], rabbitmq: Awaitable[Any], limit: float
) -> dict[str, str | None]:
    names = ("mongodb", "redis", "rabbitmq")
    reasons = await asyncio.gather(*(probe(c, limit) for c in (mongodb, redis, rabbitmq)))
    return dict(zip(names, reasons, strict=True))
