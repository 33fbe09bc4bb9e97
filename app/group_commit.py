"""Group commit of submits: the submits that arrive together share their work.

A submit joins the open batch. The batch closes when it holds
APP_SUBMIT_BATCH_MAX submits or APP_SUBMIT_LINGER_MS after its first one,
whichever comes first. Then, for the whole batch, one Redis pipeline round
trip creates every status record (and claims every Idempotency-Key), and the
messages go out together, their confirms awaited together.

Each submit still gets its own answer, and a 202 keeps its meaning: the task's
record exists and RabbitMQ confirmed the task's message. A submit whose
message RabbitMQ refused (QueueFull: its queue is at its length limit) or
never took (BrokerUnavailable) loses its record (and its key's claim) before
it is answered, so nothing is left that no worker will ever run; one that was
only slow to confirm (BrokerBusy) keeps them, since its message may still
run. Each message of a batch is confirmed or refused on its own: the others
of a batch in which some were refused are still answered 202.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from redis.exceptions import RedisError

from app.celery_app import queue_for
from app.idempotency import IdempotencyConflict, fingerprint
from app.metrics import IDEMPOTENT_REPLAYS, SUBMIT_BATCH_SIZE, TASKS_SUBMITTED
from app.publisher import BrokerBusy, TaskPublisher
from app.quotas import exceeded
from app.settings import Settings
from app.status import AsyncStatusStore, Claimed, NewRecord, OverQuota

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """A submit's answer: its task id, and whether an earlier request with the
    same Idempotency-Key created it (a replay creates nothing)."""

    task_id: str
    replayed: bool = False


@dataclass
class _Submit:
    record: NewRecord
    message: aio_pika.Message
    answer: asyncio.Future[Accepted] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def accept(self, accepted: Accepted) -> None:
        if not self.answer.done():
            self.answer.set_result(accepted)

    def refuse(self, error: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


class GroupCommit:
    def __init__(
        self,
        status: AsyncStatusStore,
        publisher: TaskPublisher,
        *,
        max_batch: int,
        linger_seconds: float,
        retry_after_seconds: int,
    ) -> None:
        self._status = status
        self._publisher = publisher
        self._retry_after = retry_after_seconds
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._open: list[_Submit] = []
        self._timer: asyncio.TimerHandle | None = None
        self._commits: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, status: AsyncStatusStore, publisher: TaskPublisher
    ) -> GroupCommit:
        """The API's group commit, bounded by APP_SUBMIT_BATCH_MAX and APP_SUBMIT_LINGER_MS."""
        return cls(
            status,
            publisher,
            max_batch=settings.submit_batch_max,
            linger_seconds=settings.submit_linger_ms / 1000,
            retry_after_seconds=settings.retry_after_seconds,
        )

    async def submit(
        self,
        name: str,
        *,
        owner: str,
        cost: int,
        total: int,
        args: list[Any],
        compression: str | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Record the task as PENDING for `owner` and publish it, with the
        submits around it; `cost` counts against the owner's quotas.

        Raises BrokerUnavailable, BrokerBusy or QueueFull (publish),
        IdempotencyConflict, QuotaExceeded, or a RedisError (status store).
        """
        task_id = task_id or str(uuid.uuid4())
        claim = None if idempotency_key is None else (idempotency_key, fingerprint(name, args))
        submit = _Submit(
            NewRecord(task_id, name, total, owner, cost, claim),
            self._publisher.message(task_id, name, args, compression),
        )
        self._open.append(submit)
        if len(self._open) >= self._max_batch:
            self._close_batch()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._close_batch)
        # If this request is cancelled, so is its answer: the batch goes on
        # regardless and skips answers that are done (accept, refuse).
        return await submit.answer

    def _close_batch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._open = self._open, []
        if batch:
            commit = asyncio.create_task(self._commit(batch))
            self._commits.add(commit)
            commit.add_done_callback(self._commits.discard)

    async def _commit(self, batch: list[_Submit]) -> None:
        SUBMIT_BATCH_SIZE.observe(len(batch))
        try:
            to_publish = await self._create_records(batch)
            if to_publish:
                await self._publish(to_publish)
        except asyncio.CancelledError:
            for submit in batch:
                submit.answer.cancel()
            raise
        except Exception as exc:
            # A bug, not an outage: each submit still gets an answer (a 500).
            log.exception("a batch of %d submits failed", len(batch))
            for submit in batch:
                submit.refuse(exc)

    async def _create_records(self, batch: list[_Submit]) -> list[_Submit]:
        """One round trip for every record; returns the submits to publish."""
        try:
            outcomes = await self._status.create_many([submit.record for submit in batch])
        except RedisError as exc:
            for submit in batch:
                submit.refuse(exc)
            return []
        to_publish = []
        for submit, outcome in zip(batch, outcomes, strict=True):
            claim = submit.record.claim
            if isinstance(outcome, Exception):
                submit.refuse(outcome)
            elif isinstance(outcome, OverQuota):
                refusal = exceeded(
                    outcome.kind,
                    submit.record.owner,
                    outcome.retry_after,
                    self._status.quotas,
                    self._retry_after,
                )
                submit.refuse(refusal)
            elif isinstance(outcome, Claimed) and claim is not None:
                if outcome.fingerprint == claim[1]:
                    IDEMPOTENT_REPLAYS.inc()
                    submit.accept(Accepted(outcome.task_id, replayed=True))
                else:
                    submit.refuse(IdempotencyConflict(claim[0]))
            else:
                to_publish.append(submit)
        return to_publish

    async def _publish(self, batch: list[_Submit]) -> None:
        """Publish every message at once and await their confirms together."""
        results = await asyncio.gather(
            *(
                self._publisher.publish(submit.message, queue_for(submit.record.name))
                for submit in batch
            ),
            return_exceptions=True,
        )
        # Records of messages RabbitMQ never took go before anyone is answered.
        lost = [
            submit
            for submit, result in zip(batch, results, strict=True)
            if result is not None and not isinstance(result, BrokerBusy)
        ]
        if lost:
            try:
                await self._status.discard_many([submit.record for submit in lost])
            except RedisError as exc:
                # They expire with their TTL; until then a status read says PENDING.
                log.warning("could not discard %d unpublished task records: %s", len(lost), exc)
        for submit, result in zip(batch, results, strict=True):
            if result is None:
                TASKS_SUBMITTED.labels(task=submit.record.name).inc()
                submit.accept(Accepted(submit.record.task_id))
            else:
                submit.refuse(result)

    async def close(self) -> None:
        """Commit what is open and wait for the commits in flight."""
        self._close_batch()
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
