"""Celery tasks: the processing task and the CSV import.

Each task reports to its status record in Redis (app.status) and stores its
final result in MongoDB, upserted by task id so a redelivered or retried task
writes the same document once. Transient errors (a database or Redis that is
briefly unreachable) retry with exponential backoff and jitter, a bounded
number of times.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import task_revoked, worker_process_init
from pymongo import MongoClient, UpdateOne
from pymongo.database import Database
from pymongo.errors import ConnectionFailure

from app import db
from app.celery_app import IMPORT_TASK, PROCESS_TASK, celery_app
from app.schemas import TaskState
from app.settings import get_settings
from app.status import SyncStatusStore
from app.work import (
    MAX_REPORTED_REJECTS,
    ImportRow,
    ProcessAccumulator,
    Rejected,
    count_data_rows,
    process_step,
    validate_rows,
)

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (ConnectionFailure, redis.ConnectionError, redis.TimeoutError)
PROGRESS_INTERVAL_SECONDS = 0.2


class TaskCancelled(Exception):
    """The task's status record says REVOKED: stop working."""


class _Resources:
    """Clients of one worker process, created on first use after the fork."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._mongo: MongoClient[dict[str, Any]] | None = None
        self._status: SyncStatusStore | None = None
        self.indexes_ready = False

    @property
    def database(self) -> Database[dict[str, Any]]:
        settings = get_settings()
        if self._mongo is None:
            self._mongo = db.sync_client(settings)
        return self._mongo[settings.mongodb_database]

    @property
    def status(self) -> SyncStatusStore:
        if self._status is None:
            settings = get_settings()
            client = redis.Redis.from_url(
                settings.redis_url.get_secret_value(),
                decode_responses=True,
                socket_timeout=5,
                socket_connect_timeout=2,
                health_check_interval=30,
            )
            self._status = SyncStatusStore(client, settings.status_ttl_seconds)
        return self._status


resources = _Resources()


@worker_process_init.connect
def _fresh_clients(**_: Any) -> None:
    # MongoClient is not fork-safe: every pool process builds its own.
    resources.reset()


class TrackedTask(Task[Any, Any]):
    """Base task: status transitions in Redis, result upserted into MongoDB."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = True
    retry_jitter = True
    acks_late = True
    reject_on_worker_lost = True

    _last_report = 0.0

    @property
    def task_id(self) -> str:
        return str(self.request.id)

    def begin(self, total: int) -> None:
        """Mark the task started, or stop here if it was cancelled while queued."""
        self._last_report = time.monotonic()
        outcome = resources.status.update(
            self.task_id,
            name=self.name,
            status=TaskState.STARTED.value,
            current=0,
            total=total,
            retries=self.request.retries,
            error="",
            worker=self.request.hostname or "",
        )
        self._check(outcome)

    def report(self, current: int, total: int, *, force: bool = False) -> None:
        """Publish progress (at most every PROGRESS_INTERVAL_SECONDS) and honour cancellation."""
        now = time.monotonic()
        if not force and now - self._last_report < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_report = now
        outcome = resources.status.update(
            self.task_id, status=TaskState.PROGRESS.value, current=current, total=total
        )
        self._check(outcome)

    def finish(self, result: dict[str, Any], total: int) -> dict[str, Any]:
        """Store the result in MongoDB first, then the final status in Redis."""
        self.report(total, total, force=True)
        self._store(TaskState.SUCCESS, result=result)
        resources.status.update(
            self.task_id,
            status=TaskState.SUCCESS.value,
            current=total,
            total=total,
            result=result,
        )
        return result

    def _check(self, outcome: str) -> None:
        if outcome == TaskState.REVOKED.value:
            raise TaskCancelled()

    def _store(self, state: TaskState, *, result: Any = None, error: str | None = None) -> None:
        store_final(
            self.task_id,
            self.name,
            state,
            result=result,
            error=error,
            retries=self.request.retries,
            worker=self.request.hostname or "",
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except TaskCancelled:
            log.info("task %s cancelled", self.task_id)
            self._store(TaskState.REVOKED, error="cancelled")
            raise Ignore() from None

    def on_retry(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        resources.status.update(
            task_id,
            status=TaskState.RETRY.value,
            retries=self.request.retries + 1,
            error=_describe(exc),
        )

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        error = _describe(exc)
        try:
            store_final(
                task_id, self.name, TaskState.FAILURE, error=error, retries=self.request.retries
            )
        finally:
            resources.status.update(task_id, status=TaskState.FAILURE.value, error=error)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time limit exceeded"
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:500]


def store_final(
    task_id: str,
    name: str,
    state: TaskState,
    *,
    result: Any = None,
    error: str | None = None,
    retries: int = 0,
    worker: str = "",
) -> None:
    """Upsert the task's final document; idempotent by task id."""
    resources.database[db.TASK_RESULTS].update_one(
        {"_id": task_id},
        {
            "$set": {
                "name": name,
                "status": state.value,
                "result": result,
                "error": error,
                "retries": retries,
                "worker": worker,
                "finished_at": datetime.now(UTC),
            }
        },
        upsert=True,
    )


@task_revoked.connect
def _revoked_in_queue(request: Any = None, **_: Any) -> None:
    # A task revoked before it started never runs its body: record the outcome here.
    if request is None:
        return
    try:
        resources.status.update(request.id, status=TaskState.REVOKED.value)
        store_final(request.id, request.task_name or "", TaskState.REVOKED, error="cancelled")
    except TRANSIENT_ERRORS:
        log.warning("could not record the revocation of %s", request.id, exc_info=True)


_settings = get_settings()


@celery_app.task(
    bind=True,
    base=TrackedTask,
    name=PROCESS_TASK,
    max_retries=_settings.task_max_retries,
    retry_backoff_max=_settings.task_retry_backoff_max,
    soft_time_limit=_settings.process_soft_time_limit,
    time_limit=_settings.process_time_limit,
)
def process_data(self: TrackedTask, data: str, iterations: int) -> dict[str, Any]:
    """Run `iterations` steps of work over `data`, reporting progress."""
    rounds = get_settings().process_rounds_per_iteration
    self.begin(iterations)
    payload = data.encode()
    accumulator = ProcessAccumulator(total=iterations)
    for step in range(1, iterations + 1):
        accumulator.add(process_step(payload, step, rounds))
        self.report(step, iterations)
    return self.finish(accumulator.result(data), iterations)


@celery_app.task(
    bind=True,
    base=TrackedTask,
    name=IMPORT_TASK,
    max_retries=_settings.task_max_retries,
    retry_backoff_max=_settings.task_retry_backoff_max,
    soft_time_limit=_settings.import_soft_time_limit,
    time_limit=_settings.import_time_limit,
)
def import_items(self: TrackedTask, csv_text: str, filename: str = "") -> dict[str, Any]:
    """Upsert items from CSV text by external_id, in batches; report rejected rows."""
    settings = get_settings()
    total = count_data_rows(csv_text)
    self.begin(total)
    collection = resources.database[db.ITEMS]
    if not resources.indexes_ready:
        db.ensure_indexes_sync(resources.database)  # the upsert key must be unique
        resources.indexes_ready = True
    inserted = updated = done = 0
    rejected: list[dict[str, Any]] = []
    rejected_total = 0
    batch: list[ImportRow] = []

    def flush() -> None:
        nonlocal inserted, updated
        if not batch:
            return
        now = datetime.now(UTC)
        outcome = collection.bulk_write(
            [
                UpdateOne(
                    {"external_id": row.external_id},
                    {
                        "$set": {
                            "name": row.name,
                            "description": row.description,
                            "updated_at": now,
                        },
                        "$setOnInsert": {"external_id": row.external_id, "created_at": now},
                    },
                    upsert=True,
                )
                for row in batch
            ],
            ordered=False,
        )
        inserted += outcome.upserted_count
        updated += outcome.matched_count
        batch.clear()

    for entry in validate_rows(csv_text):
        done += 1
        if isinstance(entry, Rejected):
            rejected_total += 1
            if len(rejected) < MAX_REPORTED_REJECTS:
                rejected.append({"row": entry.row, "reason": entry.reason})
        else:
            batch.append(entry)
            if len(batch) >= settings.import_batch_size:
                flush()
                self.report(done, total, force=True)
        self.report(done, total)
    flush()
    result = {
        "inserted": inserted,
        "updated": updated,
        "rejected": rejected,
        "rejected_total": rejected_total,
        "rows": done,
        "filename": filename,
    }
    return self.finish(result, done)
