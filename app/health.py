"""Dependency probes for GET /health: concurrent, each bounded in time, and quiet.

Quiet in three ways. A process probes at most once per APP_HEALTH_CACHE_SECONDS
and callers meanwhile share the last result (or the probe in flight): a
monitor, a load balancer and a flood of /health requests cost the
dependencies one probe a second per process. The probes use the process's own
connections (the MongoDB and Redis clients, the publisher's AMQP connection),
never a new one per call. And the answer names the service that is down with
a short category ("unreachable", "timed out", "login refused"), never an
address or an exception's text: those go to the log, with any password in a
URL masked.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from redis.exceptions import AuthenticationError as RedisAuthenticationError

from app.publisher import TaskPublisher

log = logging.getLogger(__name__)

NAMES = ("mongodb", "redis", "rabbitmq")
TIMED_OUT = "timed out"
LOGIN_REFUSED = "login refused"
UNREACHABLE = "unreachable"
# MongoDB's AuthenticationFailed.
_MONGO_AUTH_FAILED = 18
# scheme://user:password@ in a message: the userinfo is masked before logging.
_USERINFO = re.compile(r"(\w[\w+.-]*://)[^/@\s]*@")


def category(exc: BaseException) -> str:
    """What the health answer says of a failed probe."""
    if isinstance(exc, TimeoutError):
        return TIMED_OUT
    # redis-py raises AuthenticationError for NOAUTH and WRONGPASS alike.
    if isinstance(exc, aio_pika.exceptions.ProbableAuthenticationError | RedisAuthenticationError):
        return LOGIN_REFUSED
    if isinstance(exc, OperationFailure) and exc.code == _MONGO_AUTH_FAILED:
        return LOGIN_REFUSED
    return UNREACHABLE


def redact(text: str) -> str:
    """`text` with the credentials of any URL in it masked, on one line, bounded."""
    line = (text.splitlines() or [""])[0]
    return _USERINFO.sub(r"\1***@", line)[:300]


async def probe(name: str, check: Awaitable[Any], limit: float) -> str | None:
    """None when the check passed in time, else its category; the reason is logged."""
    try:
        async with asyncio.timeout(limit):
            await check
    except Exception as exc:  # any failure of a dependency is reported, not raised
        reason = f"no answer within {limit:g}s" if isinstance(exc, TimeoutError) else str(exc)
        log.warning("health: %s is down: %s: %s", name, exc.__class__.__name__, redact(reason))
        return category(exc)
    return None


async def ping_mongodb(client: AsyncMongoClient[dict[str, Any]]) -> None:
    await client.admin.command("ping")


async def ping_redis(client: aioredis.Redis) -> None:
    await client.ping()


async def ping_rabbitmq(publisher: TaskPublisher) -> None:
    # On the publisher's own connection: a broker that is down fails the round
    # trip, and one that refuses the login fails the reconnect.
    await publisher.ping()


async def check_all(
    mongodb: Awaitable[Any], redis: Awaitable[Any], rabbitmq: Awaitable[Any], limit: float
) -> dict[str, str | None]:
    """Each dependency's category of failure (None: connected), probed concurrently."""
    checks = (mongodb, redis, rabbitmq)
    reasons = await asyncio.gather(
        *(probe(name, check, limit) for name, check in zip(NAMES, checks, strict=True))
    )
    return dict(zip(NAMES, reasons, strict=True))


def dependency_check(
    mongodb: AsyncMongoClient[dict[str, Any]],
    redis: aioredis.Redis,
    publisher: TaskPublisher,
    limit: float,
) -> Callable[[], Awaitable[dict[str, str | None]]]:
    """The three probes on the process's clients, each bounded by `limit` seconds."""

    def check() -> Awaitable[dict[str, str | None]]:
        return check_all(ping_mongodb(mongodb), ping_redis(redis), ping_rabbitmq(publisher), limit)

    return check


class SharedProbe:
    """The result of `check`, kept `ttl` seconds; callers that come while it runs
    await the same run (one probe in flight per process)."""

    def __init__(self, check: Callable[[], Awaitable[dict[str, str | None]]], ttl: float) -> None:
        self._check = check
        self._ttl = ttl
        self._result: dict[str, str | None] | None = None
        self._expires = 0.0
        self._running: asyncio.Task[dict[str, str | None]] | None = None

    async def get(self) -> dict[str, str | None]:
        if self._result is not None and time.monotonic() < self._expires:
            return self._result
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        # Shielded: a caller that goes away does not cancel the others' probe.
        return await asyncio.shield(self._running)

    async def _run(self) -> dict[str, str | None]:
        try:
            result = await self._check()
            self._result, self._expires = result, time.monotonic() + self._ttl
            return result
        finally:
            self._running = None
