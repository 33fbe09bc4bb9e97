"""Messages that cannot be run end somewhere visible.

RabbitMQ dead-letters a task message into the `dead` queue when it was
delivered `APP_TASK_DELIVERY_LIMIT` times without being acknowledged (it keeps
killing its worker), or when a worker rejects it: a message naming an unknown
task, one that cannot be decoded (RejectingConsumer), or one whose outcome could
not be recorded. Every worker also consumes the `dead` queue (DeadLetters, a
Celery consumer bootstep): for each message it records the task as FAILURE
with the reason, keeps the message in MongoDB for `GET /api/async/dead` and
replay, and only then acknowledges it. While Redis or MongoDB is away the
message waits, unacknowledged, and is tried again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Consumer
from kombu.message import Message

from app.celery_app import IMPORT_TASK, PROCESS_TASK, dead_letter_queue
from app.lifecycle import clients, settle
from app.results import Outcome
from app.schemas import TaskState
from app.transient import is_transient

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
DELIVERY_LIMIT_REASON = "delivery_limit"
# The tasks a dead letter can be replayed as (POST /api/async/dead/{id}/replay).
KNOWN_TASKS = (PROCESS_TASK, IMPORT_TASK)


def _death(headers: dict[str, Any]) -> tuple[str, str]:
    """The first dead-lettering's reason and source queue, from RabbitMQ's headers."""
    deaths = headers.get("x-death") or [{}]
    first = deaths[-1] if isinstance(deaths, list) and deaths else {}
    reason = str(headers.get("x-first-death-reason") or first.get("reason") or "unknown")
    queue = str(headers.get("x-first-death-queue") or first.get("queue") or "")
    return reason, queue


def _task_args(message: Message) -> list[Any] | None:
    """The task's positional arguments (protocol 2), or None when undecodable."""
    try:
        body = message.decode()
    except Exception:  # any decoding failure means "cannot be replayed"
        return None
    if isinstance(body, list | tuple) and body and isinstance(body[0], list | tuple):
        return list(body[0])
    return None


def describe_dead(message: Message) -> dict[str, Any]:
    """What the API shows of a dead letter, and what replay needs."""
    headers: dict[str, Any] = dict(message.headers or {})
    properties = message.properties or {}
    reason, queue = _death(headers)
    task = str(headers.get("task") or "")
    args = _task_args(message) if task else None
    if reason == DELIVERY_LIMIT_REASON:
        error = f"dead-lettered: delivered too often without finishing (queue {queue})"
    elif not task:
        error = f"dead-lettered: not a task message ({reason}, queue {queue})"
    elif task not in KNOWN_TASKS:
        error = f"dead-lettered: unknown task {task!r} ({reason}, queue {queue})"
    elif args is None:
        error = f"dead-lettered: undecodable message ({reason}, queue {queue})"
    else:
        error = f"dead-lettered: {reason} by a worker (queue {queue}; no outcome could be recorded)"
    task_id = str(headers.get("id") or properties.get("correlation_id") or "")
    try:
        task_id = str(uuid.UUID(task_id))
    except ValueError:
        task_id = str(uuid.uuid4())  # not a task of ours: give it an id to list it by
    return {
        "task_id": task_id,
        "task": task,
        "queue": queue,
        "reason": reason,
        "error": error,
        "args": args if task in KNOWN_TASKS else None,
        "retries": int(headers.get("retries") or 0),
    }


def record_dead(message: Message) -> dict[str, Any]:
    """Record the task's FAILURE (unless it has an outcome) and keep the letter."""
    letter = describe_dead(message)
    task_id = letter.pop("task_id")
    outcome = settle(
        task_id,
        Outcome(
            letter["task"], TaskState.FAILURE, error=letter["error"], retries=letter["retries"]
        ),
    )
    letter["outcome"] = outcome.value
    letter["replayable"] = letter["args"] is not None and outcome == TaskState.FAILURE
    clients.results.store_dead(task_id, letter)
    return {"task_id": task_id, **letter}


class DeadLetters(bootsteps.ConsumerStep):
    """Consume the `dead` queue in the worker's main process, one message at a time."""

    def start(self, c: Any) -> None:
        self._timer = c.timer
        super().start(c)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        return [
            Consumer(
                channel,
                queues=[dead_letter_queue()],
                on_message=self.on_message,
                prefetch_count=1,
                accept=None,
            )
        ]

    def on_message(self, message: Message) -> None:
        try:
            letter = record_dead(message)
        except Exception as exc:
            # Held unacknowledged (prefetch 1 pauses this consumer) and tried again.
            level = logging.WARNING if is_transient(exc) else logging.ERROR
            log.log(level, "dead letter not recorded yet (%s); retrying in %ss", exc, RETRY_SECONDS)
            self._timer.call_after(RETRY_SECONDS, self.on_message, (message,))
            return
        log.warning(
            "task %s (%s) dead-lettered: %s", letter["task_id"], letter["task"], letter["error"]
        )
        message.ack()


class RejectingConsumer(CeleryConsumer):
    """Celery's consumer, rejecting undecodable messages to the dead-letter queue.

    Celery acknowledges (drops) a message it cannot decode; here it is rejected
    without requeue, which dead-letters it. The consumer also runs DeadLetters and
    leaves out native delayed delivery, which needs topic exchanges (ours is
    direct): a retry's countdown waits in the worker instead.
    """

    class Blueprint(CeleryConsumer.Blueprint):  # type: ignore[valid-type,misc]  # stubs: a variable
        default_steps = [
            step
            for step in CeleryConsumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        ] + ["app.deadletters:DeadLetters"]

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        log.error("undecodable message rejected to the dead-letter queue: %s", exc)
        message.reject(requeue=False)
