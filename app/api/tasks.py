"""Asynchronous work: submit to RabbitMQ, status from Redis, results from MongoDB."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile, status
from redis.exceptions import RedisError

from app.celery_app import IMPORT_TASK, PROCESS_TASK
from app.db import TASK_RESULTS
from app.resources import Resources, get_resources
from app.schemas import (
    TERMINAL_STATES,
    ErrorBody,
    ProcessRequest,
    Progress,
    TaskResult,
    TaskState,
    TaskStatus,
    TaskSubmitted,
)
from app.work import CsvFormatError, check_csv_header, count_data_rows

Responses = dict[int | str, dict[str, Any]]
router = APIRouter(prefix="/api/async", tags=["tasks"])
Res = Annotated[Resources, Depends(get_resources)]
UNAVAILABLE: Responses = {503: {"model": ErrorBody, "description": "Broker or Redis unreachable"}}
NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No task has this id"}}
CSV_TYPES = {"text/csv", "application/csv", "text/plain", "application/vnd.ms-excel"}


def _checked_id(task_id: str) -> str:
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        raise _not_found(task_id) from None


def _not_found(task_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id!r} not found")


async def _final_document(res: Resources, task_id: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = await res.database[TASK_RESULTS].find_one({"_id": task_id})
    return doc


@router.post("/process", status_code=status.HTTP_202_ACCEPTED, responses=UNAVAILABLE)
async def submit_process(body: ProcessRequest, res: Res) -> TaskSubmitted:
    """Queue `iterations` steps of work over `data`; answers at once with the task id."""
    task_id = await res.publisher.submit(
        PROCESS_TASK, total=body.iterations, args=[body.data, body.iterations]
    )
    return TaskSubmitted(task_id=task_id)


@router.post(
    "/import",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**UNAVAILABLE, 413: {"model": ErrorBody}, 415: {"model": ErrorBody}},
)
async def submit_import(
    res: Res, file: Annotated[UploadFile, File(description="CSV: external_id,name[,description]")]
) -> TaskSubmitted:
    """Queue a CSV import of items, upserted by external_id (re-running a file is safe)."""
    settings = res.settings
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
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    rows = count_data_rows(text)
    if rows > settings.import_max_rows:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{rows} rows; at most {settings.import_max_rows} per file",
        )
    task_id = await res.publisher.submit(
        IMPORT_TASK, total=rows, args=[text, filename], compression="gzip"
    )
    return TaskSubmitted(task_id=task_id)


@router.get("/status/{task_id}", responses={**NOT_FOUND, **UNAVAILABLE})
async def task_status(task_id: str, res: Res) -> TaskStatus:
    """Live status from Redis; for a finished task whose record expired, from MongoDB."""
    task_id = _checked_id(task_id)
    redis_error: RedisError | None = None
    try:
        record = await res.status.get(task_id)
    except RedisError as exc:
        record, redis_error = None, exc
    if record is not None:
        return record
    doc = await _final_document(res, task_id)
    if doc is not None:
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
    if redis_error is not None:
        raise redis_error
    raise _not_found(task_id)


@router.get("/result/{task_id}", responses={**NOT_FOUND, 409: {"model": ErrorBody}})
async def task_result(task_id: str, res: Res) -> TaskResult:
    """The final result as stored in MongoDB (kept after the Redis status expires)."""
    task_id = _checked_id(task_id)
    doc = await _final_document(res, task_id)
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
    record = await res.status.get(task_id)
    if record is None:
        raise _not_found(task_id)
    raise HTTPException(
        status.HTTP_409_CONFLICT, f"task {task_id} has no result yet (status {record.status.value})"
    )


@router.delete("/{task_id}", responses={**NOT_FOUND, 409: {"model": ErrorBody}})
async def cancel_task(task_id: str, res: Res) -> TaskStatus:
    """Cancel a pending or running task: its status becomes REVOKED."""
    task_id = _checked_id(task_id)
    outcome = await res.status.request_cancel(task_id)
    if outcome == "MISSING":
        doc = await _final_document(res, task_id)
        if doc is None:
            raise _not_found(task_id)
        outcome = doc["status"]
    if outcome != "OK" and TaskState(outcome) in TERMINAL_STATES:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"task {task_id} already finished with status {outcome}"
        )
    await res.publisher.broadcast_revoke(task_id)
    record = await res.status.get(task_id)
    if record is None:
        raise _not_found(task_id)
    return record
