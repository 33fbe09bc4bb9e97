"""The life of a task in a worker: status in Redis, one recorded outcome, retries.

- A task starts by marking its record STARTED. If the record already holds an
  outcome (a redelivered message of a finished task), the task does not run
  again: it makes sure MongoDB has that outcome too, and acknowledges.
- Progress reports are best effort: Redis being away never fails the work.
- The outcome (SUCCESS, FAILURE or REVOKED) is claimed in Redis in one atomic
  check-and-set (app.status), then stored in MongoDB as claimed, so the status
  and result routes never disagree.
- A transient error (app.transient) anywhere, the final writes included, retries
  the task with exponential backoff and jitter. Once the retries are spent the
  task ends FAILURE with the reason; if even that cannot be recorded, the
  message is rejected to the dead-letter queue (app.deadletters), never dropped.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_revoked, worker_process_init
from pymongo import MongoClient
from pymongo.database import Database

from app import db, redis_client
from app.results import Outcome, ResultStore
from app.schemas import TaskState
from app.settings import get_settings
from app.status import SyncStatusStore, is_final
from app.transient import is_transient

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.2


class TaskCancelled(Exception):
    """The task's status record says REVOKED: stop working."""


class AlreadyFinished(Exception):
    """The task's status record already holds an outcome: do not run again."""

    def __init__(self, outcome: TaskState) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


class WorkerClients:
    """Clients of one worker process, created on first use after the fork."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._mongo: MongoClient[dict[str, Any]] | None = None
        self._status: SyncStatusStore | None = None
        self._results: ResultStore | None = None
        self.indexes_ready = False

    @property
    def database(self) -> Database[dict[str, Any]]:
        settings = get_settings()
        if self._mongo is None:
            self._mongo = db.sync_client(settings)
        return self._mongo[settings.mongodb_database]

    @property
    def results(self) -> ResultStore:
        if self._results is None:
            self._results = ResultStore(self.database)
        return self._results

    @property
    def status(self) -> SyncStatusStore:
        if self._status is None:
            settings = get_settings()
            self._status = SyncStatusStore(
                redis_client.sync_client(settings),
                settings.status_ttl_seconds,
                settings.status_final_ttl_seconds,
            )
        return self._status


clients = WorkerClients()


@worker_process_init.connect
def _fresh_clients(**_: Any) -> None:
    # MongoClient is not fork-safe: every pool process builds its own.
    clients.reset()


def retry_countdown(retries: int, cap: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, capped."""
    ceiling = min(float(cap), 2.0**retries)
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (not for security)


def describe(exc: BaseException) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time limit exceeded"
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:500]


def settle(task_id: str, outcome: Outcome, **progress: Any) -> TaskState:
    """Claim `outcome` in Redis (with `progress` fields), then store the outcome that
    won in MongoDB.

    Returns the task's final state: `outcome.state`, or the one claimed before it
    (a cancel that beat a result, say).
    """
    values: dict[str, Any] = {"retries": outcome.retries, **progress}
    if outcome.name:
        values["name"] = outcome.name
    if outcome.result is not None:
        values["result"] = outcome.result
    if outcome.error is not None:
        values["error"] = outcome.error
    claimed = clients.status.settle(task_id, outcome.state, **values)
    if is_final(claimed):
        return store_recorded_outcome(task_id, outcome.name, TaskState(claimed))
    clients.results.store(task_id, replace(outcome, owner=clients.status.owner(task_id)))
    _shorten_record(task_id)
    return outcome.state


def _shorten_record(task_id: str) -> None:
    try:
        clients.status.outcome_stored(task_id)
    except Exception as exc:  # the record then lives its full TTL: harmless
        log.info("record of %s keeps its TTL: %s", task_id, describe(exc))


def store_recorded_outcome(task_id: str, name: str, outcome: TaskState) -> TaskState:
    """Copy the `outcome` held in Redis to MongoDB (a no-op if MongoDB has one)."""
    record = clients.status.get(task_id)
    if record is None:  # expired meanwhile: only after MongoDB got it
        return outcome
    clients.results.store(
        task_id,
        Outcome(
            record.name or name,
            record.status,
            result=record.result,
            error=record.error,
            retries=record.retries,
            worker=record.worker or "",
            owner=record.owner,
        ),
    )
    _shorten_record(task_id)
    return record.status


class TrackedTask(Task[Any, Any]):
    """Base task: status transitions in Redis, one outcome, retries of transient errors."""

    acks_late = True
    reject_on_worker_lost = True

    _last_report = 0.0

    @property
    def task_id(self) -> str:
        return str(self.request.id)

    @property
    def worker_name(self) -> str:
        return str(self.request.hostname or "")

    def begin(self, total: int) -> None:
        """Mark the task started; stop here if it was cancelled or already finished."""
        self._last_report = time.monotonic()
        outcome = clients.status.update(
            self.task_id,
            name=self.name,
            status=TaskState.STARTED.value,
            current=0,
            total=total,
            retries=self.request.retries,
            error="",
            worker=self.worker_name,
        )
        if outcome == TaskState.REVOKED.value:
            raise TaskCancelled()
        if is_final(outcome):
            raise AlreadyFinished(TaskState(outcome))

    def report(self, current: int, total: int, *, force: bool = False) -> None:
        """Publish progress (at most every PROGRESS_INTERVAL_SECONDS); honour cancellation.

        Best effort: while Redis is away the work goes on without reports.
        """
        now = time.monotonic()
        if not force and now - self._last_report < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_report = now
        try:
            outcome = clients.status.update(
                self.task_id, status=TaskState.PROGRESS.value, current=current, total=total
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.info("progress of %s not reported: %s", self.task_id, describe(exc))
            return
        if outcome == TaskState.REVOKED.value:
            raise TaskCancelled()

    def finish(self, result: dict[str, Any], total: int) -> dict[str, Any]:
        """Record SUCCESS with its result (unless a cancel came first)."""
        self.report(total, total, force=True)
        self._settle(TaskState.SUCCESS, result=result, current=total, total=total)
        return result

    def _settle(
        self, state: TaskState, *, result: Any = None, error: str | None = None, **progress: Any
    ) -> TaskState:
        outcome = Outcome(
            self.name,
            state,
            result=result,
            error=error,
            retries=self.request.retries,
            worker=self.worker_name,
        )
        return settle(self.task_id, outcome, **progress)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return super().__call__(*args, **kwargs)
            except TaskCancelled:
                log.info("task %s cancelled", self.task_id)
                self._settle(TaskState.REVOKED, error="cancelled")
                raise Ignore() from None
            except AlreadyFinished as finished:
                log.info("task %s already finished (%s): not run again", self.task_id, finished)
                store_recorded_outcome(self.task_id, self.name, finished.outcome)
                raise Ignore() from None
        except (Ignore, Reject, Retry):
            raise
        except Exception as exc:
            if is_transient(exc):
                self._retry_later(exc)
            self._fail(exc)
            raise

    def _fail(self, exc: Exception) -> None:
        """Record FAILURE; if Redis or MongoDB is away for that, retry the task later."""
        try:
            self._settle(TaskState.FAILURE, error=describe(exc))
        except Exception as recording:
            if not is_transient(recording):
                raise
            self._retry_later(recording)

    def _retry_later(self, exc: Exception) -> NoReturn:
        """Raise Celery's Retry with backoff; past the limit, FAILURE or the dead-letter queue."""
        retries = self.request.retries
        limit = self.max_retries if self.max_retries is not None else 0
        if retries >= limit:
            reason = f"gave up after {retries} retries: {describe(exc)}"
            try:
                self._settle(TaskState.FAILURE, error=reason)
            except Exception as recording:
                log.error("task %s: %s; cannot record it (%s)", self.task_id, reason, recording)
                raise Reject(reason, requeue=False) from exc
            raise Ignore() from exc
        try:
            clients.status.update(
                self.task_id,
                status=TaskState.RETRY.value,
                retries=retries + 1,
                error=describe(exc),
            )
        except Exception as recording:
            log.info("retry of %s not reported: %s", self.task_id, describe(recording))
        countdown = retry_countdown(retries, get_settings().task_retry_backoff_max)
        raise self.retry(exc=exc, countdown=countdown)

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Everything but the hard time limit was recorded in __call__; the hard
        # limit kills the process and is reported from the worker's main process.
        if isinstance(exc, TimeLimitExceeded):
            try:
                failed = Outcome(self.name, TaskState.FAILURE, error="hard time limit exceeded")
                settle(task_id, failed)
            except Exception:
                log.exception("cannot record the hard time limit of %s", task_id)


@task_revoked.connect
def _revoked_in_queue(request: Any = None, **_: Any) -> None:
    # A task revoked before it started never runs its body: record the outcome here.
    if request is None:
        return
    try:
        settle(request.id, Outcome(request.task_name or "", TaskState.REVOKED, error="cancelled"))
    except Exception as exc:
        if not is_transient(exc):
            raise
        # The API marked the record REVOKED already; MongoDB catches up when the
        # result route reads it (it answers from Redis meanwhile).
        log.warning("could not store the revocation of %s: %s", request.id, describe(exc))
