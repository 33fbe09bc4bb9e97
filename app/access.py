"""Who is calling: a request's API key checked against the keys, cached per process.

Each API process keeps the keys it has seen for APP_API_KEY_CACHE_SECONDS, so
a request costs no database round trip, and the submit path keeps working
while MongoDB blinks (a cached key is used past its time when MongoDB cannot
be asked). Revocation still takes effect at once: the `keys revoke` command
publishes the key's id on a Redis channel that every process listens to,
and a process that is not listening (Redis away, or reconnecting) trusts no
cached key and asks MongoDB every time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from prometheus_client import Counter
from pymongo.errors import ConnectionFailure
from redis.exceptions import RedisError

from app.keys import REVOKED_CHANNEL, ApiKey, KeyStore, Scope, key_id_of

log = logging.getLogger(__name__)
AUTH_FAILURES = Counter(
    "queuesvc_auth_failures_total",
    "Requests refused: 401 (no, malformed, unknown, expired or revoked key) or 403 (scope)",
    ["reason"],
)
RESUBSCRIBE_PAUSE_SECONDS = 1.0


@dataclass(frozen=True)
class Caller:
    """The owner and scopes of the key a request came with."""

    key_id: str
    owner: str
    scopes: frozenset[Scope]

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or self.is_admin

    @property
    def scope_owner(self) -> str | None:
        """The owner whose things this caller works on; None (an admin): everyone's."""
        return None if self.is_admin else self.owner

    def sees(self, owner: str | None) -> bool:
        """Whether this caller may see what `owner` owns (admin sees everything)."""
        return self.is_admin or owner == self.owner


class Refused(Exception):
    """401 (who are you?) or 403 (not allowed); `reason` goes to the metrics."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class KeyCache:
    """Keys by id, for `ttl` seconds, trusted only while revocations are heard."""

    def __init__(self, store: KeyStore, redis: aioredis.Redis, ttl: float) -> None:
        self._store = store
        self._redis = redis
        self._ttl = ttl
        self._keys: dict[str, tuple[ApiKey, float]] = {}
        self.listening = False

    async def get(self, key_id: str) -> ApiKey | None:
        cached = self._keys.get(key_id) if self.listening else None
        now = time.monotonic()
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        try:
            key = await self._store.get(key_id)
        except ConnectionFailure:
            if cached is None:
                raise
            # MongoDB is away; revocations still arrive, so the cached key stands.
            return cached[0]
        if key is None:
            self._keys.pop(key_id, None)
        elif self.listening:
            self._keys[key_id] = (key, now)
        return key

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    async def listen(self) -> None:
        """Follow revocations until cancelled; resubscribe after a Redis outage."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(REVOKED_CHANNEL)
                    # Revocations made while not listening were missed: start afresh.
                    self._keys.clear()
                    self.listening = True
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self.forget(str(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("not hearing key revocations (%s); asking MongoDB per request", exc)
            finally:
                self.listening = False
            await asyncio.sleep(RESUBSCRIBE_PAUSE_SECONDS)


class Authenticator:
    def __init__(self, cache: KeyCache) -> None:
        self._cache = cache
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listener = asyncio.create_task(self._cache.listen())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener

    async def caller(self, authorization: str | None) -> Caller:
        """The caller an `Authorization: Bearer <key>` header names; raises Refused (401)."""
        if not authorization:
            raise _unauthorized("missing", "an API key is required: Authorization: Bearer <key>")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        key_id = key_id_of(key) if scheme.lower() == "bearer" else None
        if key_id is None:
            raise _unauthorized("malformed", "the Authorization header is not Bearer <API key>")
        stored = await self._cache.get(key_id)
        if stored is None or not stored.matches(key):
            raise _unauthorized("unknown", "the API key is not valid")
        problem = stored.usable(datetime.now(UTC))
        if problem is not None:
            raise _unauthorized(problem, f"the API key is {problem}")
        return Caller(stored.id, stored.owner, stored.scopes)


def require(caller: Caller, scope: Scope) -> Caller:
    if not caller.allows(scope):
        AUTH_FAILURES.labels("scope").inc()
        raise Refused(403, "scope", f"the API key lacks the {scope.value} scope")
    return caller


def _unauthorized(reason: str, detail: str) -> Refused:
    AUTH_FAILURES.labels(reason).inc()
    return Refused(401, reason, detail)
