"""Redis clients of the API (asyncio) and the workers (sync), with one set of options.

A pooled connection that turns out dead (Redis restarted since it was opened)
is retried once on a fresh one, so a healthy Redis never costs a request.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from app.settings import Settings

CONNECT_TIMEOUT_SECONDS = 1.0
HEALTH_CHECK_INTERVAL_SECONDS = 15
# Errors after which a command is sent again once on a new connection.
RETRY_ON = [redis.ConnectionError, redis.TimeoutError]


def _options(socket_timeout: float) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": socket_timeout,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
        "retry_on_error": list(RETRY_ON),
    }


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=0.2, base=0.05)


def async_client(settings: Settings) -> aioredis.Redis:
    """The API's client: a bounded pool that makes a burst wait instead of failing."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_seconds,
        retry=AsyncRetry(_backoff(), 1),
        **_options(socket_timeout=2.0),
    )
    return aioredis.Redis.from_pool(pool)


def sync_client(settings: Settings) -> redis.Redis:
    """A worker process's client."""
    return redis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        retry=Retry(_backoff(), 1),
        **_options(socket_timeout=5.0),
    )
