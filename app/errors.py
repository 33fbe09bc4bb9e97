"""Every error answers JSON with a `detail`; dependency outages are 503, not 500.

A 503 carries `Retry-After` (APP_RETRY_AFTER_SECONDS): the client may try
again, and nginx passes it on without counting the app server as failed.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, PyMongoError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from app.idempotency import IdempotencyConflict
from app.metrics import PUBLISH_BUSY, QUEUE_FULL
from app.publisher import BrokerBusy, BrokerUnavailable, QueueFull
from app.quotas import QuotaExceeded

log = logging.getLogger(__name__)


def _json(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _unavailable(request: Request, detail: str) -> JSONResponse:
    response = _json(503, detail)
    response.headers["Retry-After"] = str(request.app.state.retry_after_seconds)
    return response


async def mongodb_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("MongoDB unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _unavailable(request, "MongoDB is unavailable; try again shortly")


async def mongodb_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("MongoDB error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, "database error")


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _unavailable(request, "the task status store (Redis) is unavailable; try again shortly")


async def redis_full(request: Request, exc: Exception) -> JSONResponse:
    log.error("Redis full on %s %s: %s", request.method, request.url.path, exc)
    return _unavailable(request, "the task status store (Redis) is full; the task was not accepted")


async def broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("broker unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _unavailable(
        request, "the task queue (RabbitMQ) is unavailable; the task was not accepted"
    )


async def broker_busy(request: Request, exc: Exception) -> JSONResponse:
    # Load, not an outage: counted, not logged per request (that would add load).
    PUBLISH_BUSY.inc()
    log.debug("broker busy on %s %s: %s", request.method, request.url.path, exc)
    return _unavailable(request, "the task queue is busy; the task was not accepted, try again")


async def queue_full(request: Request, exc: Exception) -> JSONResponse:
    # Backpressure, not an outage: counted, not logged per request (a flood would
    # flood the log too).
    QUEUE_FULL.inc()
    log.debug("queue full on %s %s: %s", request.method, request.url.path, exc)
    return _unavailable(
        request, "the task queue is full; the task was not accepted, try again later"
    )


async def idempotency_conflict(request: Request, exc: Exception) -> JSONResponse:
    # Shaped like FastAPI's own validation errors, as the 422 schema says.
    error = {
        "type": "idempotency_conflict",
        "loc": ["header", "Idempotency-Key"],
        "msg": str(exc),
        "input": request.headers.get("idempotency-key"),
    }
    return JSONResponse({"detail": [error]}, status_code=422)


async def over_quota(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QuotaExceeded)
    response = _json(429, str(exc))
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _documented_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the OpenAPI schema gives `path` (HEAD with GET), empty if none.

    As OpenAPI matches paths: a concrete one (/api/async/dead) before a templated
    one (/api/async/{task_id}).
    """
    paths: dict[str, dict[str, object]] = app.openapi()["paths"]
    matching = [template for template in paths if compile_path(template)[0].match(path)]
    if not matching:
        return set()
    methods = {method.upper() for method in paths[min(matching, key=lambda t: t.count("{"))]}
    return methods | {"HEAD"} if "GET" in methods else methods


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's 405 names the methods of the first route on the path only; a path
    # has one route per method, and `Allow` must name them all, as the schema does.
    assert isinstance(exc, HTTPException)
    allowed = _documented_methods(request.app, request.scope["path"])
    headers = {"Allow": ", ".join(sorted(allowed))} if allowed else exc.headers
    return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, "internal server error")


def install(app: FastAPI, retry_after_seconds: int) -> None:
    app.state.retry_after_seconds = retry_after_seconds
    app.add_exception_handler(ConnectionFailure, mongodb_unavailable)
    app.add_exception_handler(PyMongoError, mongodb_error)
    app.add_exception_handler(RedisConnectionError, redis_unavailable)
    app.add_exception_handler(RedisTimeoutError, redis_unavailable)
    app.add_exception_handler(RedisOutOfMemoryError, redis_full)
    app.add_exception_handler(BrokerUnavailable, broker_unavailable)
    app.add_exception_handler(BrokerBusy, broker_busy)
    app.add_exception_handler(QueueFull, queue_full)
    app.add_exception_handler(IdempotencyConflict, idempotency_conflict)
    app.add_exception_handler(QuotaExceeded, over_quota)

    app.add_exception_handler(405, method_not_allowed)
    app.add_exception_handler(Exception, unexpected)
