"""Which errors mean "a dependency is briefly away" rather than "this task is wrong".

A transient error is retried (tasks) or answered 503 with Retry-After (API);
everything else is a real failure.
"""

from __future__ import annotations

import redis
from pymongo.errors import ConnectionFailure, PyMongoError

# redis-py: ConnectionError covers BusyLoadingError (Redis reloading its AOF).
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)
# Redis at maxmemory with noeviction refuses writes until records expire.
REDIS_FULL = (redis.exceptions.OutOfMemoryError,)
# Replies of a server that is starting, failing over or shutting down.
_REDIS_COMING_BACK = ("LOADING", "MASTERDOWN", "TRYAGAIN", "READONLY")
_MONGO_LABELS = ("RetryableWriteError", "TransientTransactionError", "ResetPool")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, REDIS_UNAVAILABLE + REDIS_FULL + (ConnectionFailure,)):
        return True
    if isinstance(exc, redis.ResponseError):
        return str(exc).startswith(_REDIS_COMING_BACK)
    if isinstance(exc, PyMongoError):
        return any(exc.has_error_label(label) for label in _MONGO_LABELS)
    return False
