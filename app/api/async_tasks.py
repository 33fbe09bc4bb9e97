"""Asynchronous work: submit to RabbitMQ, status from Redis, results from MongoDB."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    File,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.exceptions import RequestValidationError
from pymongo import DESCENDING
from pymongo.errors import ConnectionFailure
from redis.exceptions import RedisError

from app.access import Caller
from app.api.auth import Admin, Submitter, TaskReader
from app.api.clients import ApiClients, api_clients
from app.api.responses import BODY, Responses, documented, keyed
from app.celery_app import IMPORT_TASK, PROCESS_TASK
from app.db import DEAD_LETTERS, TASK_RESULTS
from app.group_commit import Accepted
from app.idempotency import KEY_PATTERN
from app.schemas import (
    TERMINAL_STATES,
    DeadLetter,
    DeadLetterPage,
    ProcessRequest,
    Progress,
    TaskReplayed,
    TaskResult,
    TaskState,
    TaskStatus,
    TaskSubmitted,
)
from app.work import CsvFormatError, check_csv_header, count_data_rows

router = APIRouter(prefix="/api/async", tags=["tasks"], responses=keyed())
REPLAYED: Responses = {
    200: {
        "model": TaskSubmitted,
        "description": "An earlier request with this Idempotency-Key and the same body "
        "created the task; nothing new was queued",
    }
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Retry-safe submits: within 24 h, the same key with the same request "
        "returns the first task (200) instead of queueing another; with a different "
        "request, 422. 1 to 255 printable ASCII characters, no spaces.",
    ),
]
CSV_TYPES = {"text/csv", "application/csv", "text/plain", "application/vnd.ms-excel"}
# The upload's part is CSV text: a client that sends another type gets 415.
CSV_PART: dict[str, Any] = {
    "requestBody": {
        "content": {"multipart/form-data": {"encoding": {"file": {"contentType": "text/csv"}}}}
    }
}


def checked_id(task_id: str) -> str:
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        raise not_found(task_id) from None


def not_found(task_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id!r} not found")


async def final_document(
    clients: ApiClients, task_id: str, caller: Caller
) -> dict[str, Any] | None:
    """The task's stored outcome, if `caller` may see it (another owner's is not there)."""
    doc: dict[str, Any] | None = await clients.database[TASK_RESULTS].find_one({"_id": task_id})
    return doc if doc is not None and caller.sees(doc.get("owner")) else None


async def _record(clients: ApiClients, task_id: str, caller: Caller) -> TaskStatus | None:
    """The task's live status record, if `caller` may see it."""
    record = await clients.status.get(task_id)
    return record if record is not None and caller.sees(record.owner) else None


def status_of_document(task_id: str, doc: dict[str, Any]) -> TaskStatus:
    """A finished task's status from its MongoDB document (its Redis record expired)."""
    return TaskStatus(
        task_id=task_id,
        name=doc.get("name"),
        status=TaskState(doc["status"]),
        progress=Progress(current=0, total=0, progress=100),
        retries=doc.get("retries", 0),
        worker=doc.get("worker") or None,
        result=doc.get("result"),
        error=doc.get("error"),
    )


def _submitted(accepted: Accepted, response: Response) -> TaskSubmitted:
    if accepted.replayed:
        response.status_code = status.HTTP_200_OK
    return TaskSubmitted(task_id=accepted.task_id)


@router.post(
    "/process",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**REPLAYED, **documented(*BODY, 429)},
)
async def submit_process(
    body: ProcessRequest,
    response: Response,
    request: Request,
    caller: Submitter,
    idempotency_key: IdempotencyKey = None,
) -> TaskSubmitted:
    """Queue `iterations` steps of work over `data`; answers at once with the task id."""
    clients = api_clients(request)
    accepted = await clients.submits.submit(
        PROCESS_TASK,
        owner=caller.owner,
        cost=body.iterations,
        total=body.iterations,
        args=[body.data, body.iterations],
        idempotency_key=idempotency_key,
    )
    return _submitted(accepted, response)


@router.post(
    "/import",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**REPLAYED, **documented(*BODY, 415, 429)},
    openapi_extra=CSV_PART,
)
async def submit_import(
    request: Request,
    response: Response,
    caller: Submitter,
    file: Annotated[UploadFile, File(description="CSV: external_id,name[,description]")],
    idempotency_key: IdempotencyKey = None,
) -> TaskSubmitted:
    """Queue a CSV import of items, upserted by external_id (re-running a file is safe)."""
    clients = api_clients(request)
    settings = clients.settings
    filename = file.filename or ""
    content_type = (file.content_type or "").split(";")[0].strip().lower()
    if content_type not in CSV_TYPES and not filename.lower().endswith(".csv"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"expected a CSV file (text/csv), got {content_type or 'no type'}",
        )
    raw = await file.read(settings.import_max_bytes + 1)
    if len(raw) > settings.import_max_bytes:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"CSV file larger than {settings.import_max_bytes} bytes",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "expected a UTF-8 CSV file, got binary data"
        ) from None
    if "\x00" in text:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "expected a CSV file, got binary data"
        )
    try:
        check_csv_header(text)
    except CsvFormatError as exc:
        # A 422 has FastAPI's shape, whoever finds the error.
        error = {"type": "csv_format", "loc": ("body", "file"), "msg": str(exc), "input": None}
        raise RequestValidationError([error]) from exc
    rows = count_data_rows(text)
    if rows > settings.import_max_rows:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{rows} rows; at most {settings.import_max_rows} per file",
        )
    accepted = await clients.submits.submit(
        IMPORT_TASK,
        owner=caller.owner,
        cost=max(1, rows),
        total=rows,
        args=[text, filename, caller.owner],
        compression="gzip",
        idempotency_key=idempotency_key,
    )
    return _submitted(accepted, response)


@router.get("/status/{task_id}", responses=documented(404))
async def task_status(task_id: str, request: Request, caller: TaskReader) -> TaskStatus:
    """Live status from Redis; for a finished task whose record expired, from MongoDB."""
    clients = api_clients(request)
    task_id = checked_id(task_id)
    redis_error: RedisError | None = None
    try:
        record = await _record(clients, task_id, caller)
    except RedisError as exc:
        record, redis_error = None, exc
    if record is not None:
        return record
    doc = await final_document(clients, task_id, caller)
    if doc is not None:
        return status_of_document(task_id, doc)
    if redis_error is not None:
        raise redis_error
    raise not_found(task_id)


@router.get("/result/{task_id}", responses=documented(404, 409))
async def task_result(task_id: str, request: Request, caller: TaskReader) -> TaskResult:
    """The final result as stored in MongoDB (kept after the Redis status expires).

    The outcome is claimed in Redis first and MongoDB follows, so until then, or
    while MongoDB is away, the outcome comes from the Redis record.
    """
    clients = api_clients(request)
    task_id = checked_id(task_id)
    mongo_error: ConnectionFailure | None = None
    try:
        doc = await final_document(clients, task_id, caller)
    except ConnectionFailure as exc:
        doc, mongo_error = None, exc
    if doc is not None:
        return TaskResult(
            task_id=task_id,
            name=doc.get("name"),
            status=TaskState(doc["status"]),
            worker=doc.get("worker") or None,
            result=doc.get("result"),
            error=doc.get("error"),
            finished_at=doc["finished_at"],
        )
    record = await _record(clients, task_id, caller)
    if record is None:
        if mongo_error is not None:
            raise mongo_error
        raise not_found(task_id)
    if record.status in TERMINAL_STATES:
        return TaskResult(
            task_id=task_id,
            name=record.name,
            status=record.status,
            worker=record.worker,
            result=record.result,
            error=record.error,
            finished_at=record.updated_at or datetime.now(UTC),
        )
    raise HTTPException(
        status.HTTP_409_CONFLICT, f"task {task_id} has no result yet (status {record.status.value})"
    )


@router.delete("/{task_id}", responses=documented(404, 409))
async def cancel_task(task_id: str, request: Request, caller: Submitter) -> TaskStatus:
    """Cancel a pending or running task: its status becomes REVOKED."""
    clients = api_clients(request)
    task_id = checked_id(task_id)
    current = await clients.status.get(task_id)
    if current is not None and not caller.sees(current.owner):
        raise not_found(task_id)
    outcome = "MISSING" if current is None else await clients.status.request_cancel(task_id)
    if outcome == "MISSING":
        doc = await final_document(clients, task_id, caller)
        if doc is None:
            raise not_found(task_id)
        outcome = doc["status"]
    if outcome != "OK" and TaskState(outcome) in TERMINAL_STATES:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"task {task_id} already finished with status {outcome}"
        )
    await clients.publisher.broadcast_revoke(task_id)
    record = await clients.status.get(task_id)
    if record is None:
        raise not_found(task_id)
    return record


@router.get("/dead", responses=documented())
async def dead_letters(
    request: Request, caller: Admin, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> DeadLetterPage:
    """Tasks whose messages could not be run (dead-lettered), newest first."""
    clients = api_clients(request)
    collection = clients.database[DEAD_LETTERS]
    cursor = collection.find({}).sort([("dead_at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
    items = [DeadLetter(task_id=doc["_id"], **_dead_fields(doc)) async for doc in cursor]
    return DeadLetterPage(items=items, total=await collection.count_documents({}))


def _dead_fields(doc: dict[str, Any]) -> dict[str, Any]:
    names = ("task", "queue", "reason", "error", "replayable", "replayed_as", "dead_at")
    return {name: doc.get(name) for name in names if doc.get(name) is not None}


def _replay_total(task: str, args: list[Any]) -> int:
    if task == PROCESS_TASK and len(args) == 2 and isinstance(args[1], int):
        return args[1]
    if task == IMPORT_TASK and args and isinstance(args[0], str):
        return count_data_rows(args[0])
    raise ValueError(f"cannot replay a {task or 'non-task'} message with these arguments")


@router.post(
    "/dead/{task_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    responses=documented(404, 409, 429),
)
async def replay_dead_letter(task_id: str, request: Request, caller: Admin) -> TaskReplayed:
    """Submit a dead-lettered task again, under a new task id (once), as the
    admin key's owner (a dead letter does not say who submitted it)."""
    clients = api_clients(request)
    task_id = checked_id(task_id)
    collection = clients.database[DEAD_LETTERS]
    doc = await collection.find_one({"_id": task_id})
    if doc is None:
        raise not_found(task_id)
    if doc.get("replayed_as"):
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"task {task_id} was replayed as {doc['replayed_as']}"
        )
    try:
        total = _replay_total(doc.get("task", ""), doc.get("args") or [])
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if not doc.get("replayable"):
        raise HTTPException(status.HTTP_409_CONFLICT, f"task {task_id} cannot be replayed")
    new_id = str(uuid.uuid4())
    # Claim the replay first, so two concurrent calls submit it once.
    claimed = await collection.update_one(
        {"_id": task_id, "replayed_as": None}, {"$set": {"replayed_as": new_id}}
    )
    if claimed.modified_count != 1:
        raise HTTPException(status.HTTP_409_CONFLICT, f"task {task_id} was replayed already")
    try:
        await clients.submits.submit(
            doc["task"],
            owner=caller.owner,
            cost=max(1, total),
            total=total,
            args=doc["args"],
            task_id=new_id,
        )
    except BaseException:
        await collection.update_one({"_id": task_id}, {"$set": {"replayed_as": None}})
        raise
    return TaskReplayed(task_id=new_id, replay_of=task_id)
