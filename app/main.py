"""The FastAPI application factory: `gunicorn 'app.main:create_app()'`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app import __version__, db, errors, metrics, quotas
from app.access import Authenticator, KeyCache
from app.api import async_tasks, auth, health, items, task_events
from app.api.clients import ApiClients
from app.events import EventHub
from app.group_commit import GroupCommit
from app.health import SharedProbe, dependency_check
from app.items import ItemRepository
from app.keys import API_KEYS, KeyStore
from app.overload import InFlightLimit
from app.publisher import TaskPublisher
from app.redis_client import async_client as redis_client_for
from app.request_body import RequestBody
from app.settings import Settings, get_settings
from app.status import AsyncStatusStore

log = logging.getLogger(__name__)
INDEX_RETRY_SECONDS = 5.0
# Multipart framing around an uploaded CSV file.
MULTIPART_OVERHEAD = 64 * 1024


async def _ensure_indexes(database: AsyncDatabase[dict[str, Any]]) -> None:
    """Create indexes, retrying in the background while MongoDB is unreachable."""
    while True:
        try:
            await db.ensure_indexes(database)
            log.info("MongoDB indexes in place")
            return
        except PyMongoError as exc:
            log.warning("cannot create MongoDB indexes yet (%s); retrying", exc)
            await asyncio.sleep(INDEX_RETRY_SECONDS)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mongo = db.async_client(settings)
        database = mongo[settings.mongodb_database]
        redis_client = redis_client_for(settings)
        status_store = AsyncStatusStore(
            redis_client,
            settings.status_ttl_seconds,
            settings.idempotency_ttl_seconds,
            quotas.from_settings(settings),
        )
        keys = KeyCache(KeyStore(database[API_KEYS]), redis_client, settings.api_key_cache_seconds)
        app.state.authenticator = authenticator = Authenticator(keys)
        authenticator.start()
        publisher = TaskPublisher.from_settings(settings)
        submits = GroupCommit.from_settings(settings, status_store, publisher)
        events = EventHub(redis_client, settings.events_max_streams)
        events.start()
        app.state.clients = ApiClients(
            settings=settings,
            mongo=mongo,
            database=database,
            redis=redis_client,
            status=status_store,
            publisher=publisher,
            submits=submits,
            items=ItemRepository(database[db.ITEMS]),
            health=SharedProbe(
                dependency_check(mongo, redis_client, publisher, settings.health_timeout_seconds),
                settings.health_cache_seconds,
            ),
            events=events,
        )
        indexes = asyncio.create_task(_ensure_indexes(database))
        try:
            yield
        finally:
            indexes.cancel()
            with suppress(asyncio.CancelledError):
                await indexes
            await events.close()
            await authenticator.close()
            await submits.close()
            await publisher.close()
            await redis_client.aclose()
            await mongo.close()

    app = FastAPI(
        title="queuesvc",
        version=__version__,
        description="Fast CRUD on MongoDB; heavy work queued to Celery workers via RabbitMQ.",
        lifespan=lifespan,
        strict_content_type=False,  # a body without a content type is read as JSON
        # Served below behind the operators' access rule instead.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.ops_networks = settings.ops_networks
    app.include_router(health.router)
    app.include_router(items.router)
    app.include_router(async_tasks.router)
    app.include_router(task_events.router)
    errors.install(app, settings.retry_after_seconds)
    auth.install(app)
    operators_only = [Depends(auth.OPS)]

    @app.get("/metrics", include_in_schema=False, dependencies=operators_only)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = task_events.only_the_stream_documented(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override

    @app.get("/openapi.json", include_in_schema=False, dependencies=operators_only)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=operators_only)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="queuesvc API")

    # Our three layers, innermost first: every request crosses each one.
    app.add_middleware(
        RequestBody,
        default_limit=settings.max_body_bytes,
        limits={"/api/async/import": settings.import_max_bytes + MULTIPART_OVERHEAD},
    )
    app.add_middleware(metrics.MetricsMiddleware)
    # Outermost: a request over the limit costs nothing else.
    app.add_middleware(
        InFlightLimit,
        limit=settings.max_in_flight,
        retry_after_seconds=settings.retry_after_seconds,
        # An event stream stays open for its task's life: APP_EVENTS_MAX_STREAMS bounds them.
        exempt_prefixes=(task_events.PATH_PREFIX,),
    )
    return app
