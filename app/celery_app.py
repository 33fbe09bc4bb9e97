"""The Celery application: queues, routing and the reliability settings.

Run a worker per queue, e.g. ``celery -A app.celery_app worker -Q default``
and ``celery -A app.celery_app worker -Q imports``.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from app.settings import Settings, get_settings

DEFAULT_QUEUE = "default"
IMPORTS_QUEUE = "imports"
PROCESS_TASK = "app.tasks.process_data"
IMPORT_TASK = "app.tasks.import_items"
EXCHANGE = "queuesvc"
QUEUE_NAMES = (DEFAULT_QUEUE, IMPORTS_QUEUE)
ROUTES = {IMPORT_TASK: IMPORTS_QUEUE}


def queue_for(task_name: str) -> str:
    return ROUTES.get(task_name, DEFAULT_QUEUE)


def create_celery(settings: Settings) -> Celery:
    celery = Celery(
        "queuesvc", broker=settings.broker_url.get_secret_value(), include=["app.tasks"]
    )
    exchange = Exchange(EXCHANGE, type="direct", durable=True)
    celery.conf.update(
        task_queues=(
            Queue(DEFAULT_QUEUE, exchange, routing_key=DEFAULT_QUEUE, durable=True),
            Queue(IMPORTS_QUEUE, exchange, routing_key=IMPORTS_QUEUE, durable=True),
        ),
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange=EXCHANGE,
        task_default_routing_key=DEFAULT_QUEUE,
        task_routes={
            name: {"queue": queue, "routing_key": queue} for name, queue in ROUTES.items()
        },
        task_default_delivery_mode="persistent",
        task_serializer="json",
        accept_content=["json"],
        # The service keeps its own status records (app.status) and results
        # (MongoDB); Celery's result backend would only duplicate them.
        task_ignore_result=True,
        # A task is acknowledged only once done, and requeued if its worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.publish_connect_timeout_seconds,
        # Bound how long a publish may wait for a broker that is down.
        broker_transport_options={
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


celery_app = create_celery(get_settings())
app = celery_app  # `celery -A app.celery_app` finds it by this name too
