"""Submitting tasks from the API without blocking the event loop.

Celery's publisher is synchronous, so it runs on a small dedicated thread
pool. A broker that is down fails fast: the connect timeout and the retry
policy bound the whole publish to a couple of seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from app.metrics import TASKS_SUBMITTED
from app.status import AsyncStatusStore


class BrokerUnavailable(Exception):
    """The task could not be handed to RabbitMQ."""


class TaskPublisher:
    def __init__(
        self, celery: Celery, status: AsyncStatusStore, *, threads: int, max_retries: int
    ) -> None:
        self._celery = celery
        self._status = status
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="publish")
        self._retry_policy = {
            "max_retries": max_retries,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        }

    async def submit(
        self, name: str, *, total: int, args: list[Any], compression: str | None = None
    ) -> str:
        """Record the task as PENDING, then publish it; returns the task id."""
        task_id = str(uuid.uuid4())
        # The record exists before any worker can see the message.
        await self._status.create(task_id, name, total)
        send = partial(
            self._celery.send_task,
            name,
            args=args,
            task_id=task_id,
            retry=True,
            retry_policy=self._retry_policy,
            compression=compression,
        )
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, send)
        except (OperationalError, OSError) as exc:
            await self._status.discard(task_id)
            raise BrokerUnavailable(str(exc)) from exc
        TASKS_SUBMITTED.labels(task=name).inc()
        return task_id

    async def broadcast_revoke(self, task_id: str) -> None:
        """Ask every worker to drop the task if it is still queued (best effort)."""
        revoke = partial(self._celery.control.revoke, task_id)
        # Failure is fine: the REVOKED status record alone stops the task when it starts.
        with suppress(OperationalError, OSError):
            await asyncio.get_running_loop().run_in_executor(self._executor, revoke)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
