"""The Celery application: the queue layout, routing and the reliability settings.

Run a worker per queue, e.g. ``celery -A app.celery_app worker -Q default``
and ``celery -A app.celery_app worker -Q imports``.

Every Celery app is built from a Settings object by `create_celery`: the API's
(`app.main.create_app(settings)`) from the settings it was given, the workers'
(this module's `app`, what ``celery -A app.celery_app`` loads) from
`get_settings()` on first use, so importing this module reads no settings.

The queue layout is defined here and nowhere else: the workers declare it
through Celery, the API's publisher declares the same queues from `task_queues`
(app.publisher), and RabbitMQ needs nothing declared ahead.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from app.settings import Settings, get_settings

DEFAULT_QUEUE = "default"
IMPORTS_QUEUE = "imports"
# Task names travel in every queued message, so they do not follow module names:
# the tasks are defined in app.jobs.
PROCESS_TASK = "app.tasks.process_data"
IMPORT_TASK = "app.tasks.import_items"
EXCHANGE = "queuesvc"
QUEUE_NAMES = (DEFAULT_QUEUE, IMPORTS_QUEUE)
ROUTES = {IMPORT_TASK: IMPORTS_QUEUE}
# Messages that cannot be run (delivered too often, undecodable, unknown task)
# end here; the workers record them (app.deadletters).
DEAD_EXCHANGE = "queuesvc.dead"
DEAD_QUEUE = "dead"


def queue_for(task_name: str) -> str:
    return ROUTES.get(task_name, DEFAULT_QUEUE)


def task_queue_arguments(settings: Settings) -> dict[str, Any]:
    """Quorum queues that dead-letter a message after `task_delivery_limit` deliveries."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.task_delivery_limit,
        "x-dead-letter-exchange": DEAD_EXCHANGE,
        # at-least-once dead-lettering: a dead letter is never dropped in transit;
        # RabbitMQ requires reject-publish overflow for it.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def task_queues(settings: Settings) -> tuple[Queue, ...]:
    exchange = Exchange(EXCHANGE, type="direct", durable=True)
    arguments = task_queue_arguments(settings)
    return tuple(
        Queue(name, exchange, routing_key=name, durable=True, queue_arguments=arguments)
        for name in QUEUE_NAMES
    )


def dead_letter_queue() -> Queue:
    return Queue(
        DEAD_QUEUE,
        Exchange(DEAD_EXCHANGE, type="fanout", durable=True),
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def task_options(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per-task retries and time limits (Celery's task annotations), from `settings`."""
    return {
        PROCESS_TASK: {
            "max_retries": settings.task_max_retries,
            "soft_time_limit": settings.process_soft_time_limit,
            "time_limit": settings.process_time_limit,
        },
        IMPORT_TASK: {
            "max_retries": settings.task_max_retries,
            "soft_time_limit": settings.import_soft_time_limit,
            "time_limit": settings.import_time_limit,
        },
    }


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from `settings`; the tasks (app.jobs) bind to it once
    that module is imported (the workers import it through `include`)."""
    celery = Celery(
        "queuesvc",
        broker=settings.broker_url.get_secret_value(),
        include=["app.jobs"],
    )
    celery.conf.update(
        task_queues=task_queues(settings),
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange=EXCHANGE,
        task_default_routing_key=DEFAULT_QUEUE,
        task_routes={
            name: {"queue": queue, "routing_key": queue} for name, queue in ROUTES.items()
        },
        task_annotations=task_options(settings),
        task_default_delivery_mode="persistent",
        task_serializer="json",
        accept_content=["json"],
        # The service keeps its own status records (app.status) and results
        # (MongoDB); Celery's result backend would only duplicate them.
        task_ignore_result=True,
        # A task is acknowledged only once done, and requeued if its worker dies;
        # the quorum queue's delivery limit ends a message that keeps killing workers.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # An undecodable message is rejected (dead-lettered), not acknowledged and lost.
        worker_consumer="app.deadletters:RejectingConsumer",
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.publish_connect_timeout_seconds,
        broker_transport_options={
            # A retry's new message is confirmed by RabbitMQ before the old one is acked.
            "confirm_publish": True,
            # Bound how long a publish may wait for a broker that is down.
            "max_retries": settings.publish_max_retries,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        },
        broker_heartbeat=30,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return celery


@cache
def worker_celery() -> Celery:
    """The workers' Celery app, from the process's settings (built once)."""
    return create_celery(get_settings())


def __getattr__(name: str) -> Celery:
    # `celery -A app.celery_app` loads the module's `app` (or `celery_app`): built
    # on first access, so that the API and the tests can import the queue layout
    # above without a configured environment.
    if name in ("app", "celery_app"):
        return worker_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
