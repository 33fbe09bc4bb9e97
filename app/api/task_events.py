"""GET /api/async/events/{task_id}: a task's state as Server-Sent Events, pushed as it changes.

The stream sends the current state at once (`event: status`), every change
after it, and the final state with its result (`event: final`), then closes.
Each event's id is the record's sequence number: a client that reconnects
with `Last-Event-ID` gets the current state only if it is newer than that,
and the final event in any case. A task whose record expired gets its final
event from MongoDB (without an id: there is nothing after it). Comment lines
(`: ping`) every APP_EVENTS_HEARTBEAT_SECONDS keep idle proxies from closing
the stream; a worker that is stopping ends its streams, and clients resume on
another with their last id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from pydantic.json_schema import SkipJsonSchema
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from app import sse
from app.access import Caller
from app.api.async_tasks import checked_id, final_document, not_found, status_of_document
from app.api.auth import TaskReader
from app.api.clients import ApiClients, api_clients
from app.api.responses import Responses, documented, keyed
from app.events import Snapshot, Subscriber, TooManyStreams

log = logging.getLogger(__name__)
PATH_PREFIX = "/api/async/events/"
router = APIRouter(prefix="/api/async", tags=["tasks"], responses=keyed())
# How long a new stream waits for its channel's subscription before reading
# the record anyway (a late confirmation makes it read again).
CONFIRM_TIMEOUT_SECONDS = 2.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
EVENTS_RESPONSE: Responses = {
    200: {
        "description": "Server-Sent Events: `event: status` with a TaskStatus as `data` and "
        "the record's sequence number as `id`, at once and on every change; `event: final` "
        "with the final TaskStatus, then the stream ends. `: ping` comments in between.",
        # OpenAPI 3.1 has no itemSchema (3.2): `schema` describes one event, the
        # HTML specification's fields, as Schemathesis reads it.
        "content": {
            sse.MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"type": "string", "enum": ["status", "final"]},
                        "id": {"type": "string", "pattern": "^[0-9]+$"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/TaskStatus"},
                        },
                    },
                }
            }
        },
    }
}
LastEventId = Annotated[
    int | SkipJsonSchema[None],
    Header(
        alias="Last-Event-ID",
        description="The id of the last event received: on reconnecting, the current state "
        "is sent only if it is newer than that (the final event always is).",
    ),
]


def only_the_stream_documented(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the `application/json` that FastAPI adds to the route's 200 (it answers a
    stream, never JSON; a response_class would also document its errors as a stream)."""
    operation = schema.get("paths", {}).get(PATH_PREFIX + "{task_id}", {}).get("get", {})
    content = operation.get("responses", {}).get("200", {}).get("content", {})
    content.pop("application/json", None)
    return schema


class EventStreamResponse(StreamingResponse):
    media_type = sse.MEDIA_TYPE


async def _snapshot(clients: ApiClients, task_id: str, caller: Caller) -> Snapshot | None:
    """The task's state, if `caller` may see it: its live record, else its stored outcome."""
    raw = await clients.status.get_raw(task_id)
    if raw:
        return Snapshot.of_record(task_id, raw) if caller.sees(raw.get("owner")) else None
    doc = await final_document(clients, task_id, caller)
    return Snapshot(None, status_of_document(task_id, doc)) if doc is not None else None


def _event(snapshot: Snapshot) -> bytes:
    kind = "final" if snapshot.final else "status"
    return sse.encode(kind, snapshot.status.model_dump_json(), snapshot.seq)


# No response_class: the errors stay documented as JSON; the 200 is the stream.
@router.get(
    "/events/{task_id}",
    responses={**EVENTS_RESPONSE, **documented(404)},
)
async def task_events(
    task_id: str, request: Request, caller: TaskReader, last_event_id: LastEventId = None
) -> EventStreamResponse:
    """Follow a task: its state now, each change as it happens, and its final state."""
    clients = api_clients(request)
    task_id = checked_id(task_id)
    if await _snapshot(clients, task_id, caller) is None:
        raise not_found(task_id)
    if clients.events.streams >= clients.settings.events_max_streams:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "too many event streams open on this server; try again shortly",
            headers={"Retry-After": str(clients.settings.retry_after_seconds)},
        )
    return EventStreamResponse(
        _stream(clients, task_id, caller, last_event_id), headers=STREAM_HEADERS
    )


async def _stream(
    clients: ApiClients, task_id: str, caller: Caller, last_event_id: int | None
) -> AsyncIterator[bytes]:
    # Any failure ends the stream quietly: the client reconnects with its last id.
    with suppress(RedisError, PyMongoError, TooManyStreams):
        async with clients.events.subscription(task_id) as subscriber:
            with suppress(TimeoutError):
                await asyncio.wait_for(subscriber.confirmed.wait(), CONFIRM_TIMEOUT_SECONDS)
            async for chunk in _events(clients, subscriber, caller, last_event_id):
                yield chunk


async def _events(
    clients: ApiClients, subscriber: Subscriber, caller: Caller, sent: int | None
) -> AsyncIterator[bytes]:
    heartbeat = clients.settings.events_heartbeat_seconds
    subscriber.resync = False
    snapshot = await _snapshot(clients, subscriber.task_id, caller)
    while not subscriber.ended:
        if snapshot is None:
            return  # gone meanwhile (expired, not in MongoDB): nothing more to say
        if snapshot.final or snapshot.newer_than(sent):
            yield _event(snapshot)
            if snapshot.final:
                return
            sent = snapshot.seq
        snapshot = None
        while snapshot is None:
            if not await subscriber.wait(heartbeat):
                yield sse.HEARTBEAT
                continue
            if subscriber.ended:
                return
            if subscriber.resync:
                subscriber.resync = False
                subscriber.take()
                snapshot = await _snapshot(clients, subscriber.task_id, caller)
                break
            snapshot = subscriber.take()
