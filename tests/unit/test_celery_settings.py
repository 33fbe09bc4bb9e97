"""One source of settings per process: every Celery app is built from a Settings object.

The API's publisher uses a Celery app configured from the settings given to
`create_app`, and the workers' app (`celery -A app.celery_app`) from the
process's environment. RabbitMQ is replaced by a recording stand-in for
aio-pika's connection, and the Redis status record by a no-op: everything
between the route and the broker runs for real.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest
from celery.app.utils import find_app
from fastapi.testclient import TestClient

from app.access import Caller
from app.api.auth import NEEDS
from app.celery_app import DEAD_QUEUE, IMPORT_TASK, PROCESS_TASK, create_celery, worker_celery
from app.keys import Scope
from app.main import create_app
from app.settings import Settings, get_settings
from app.status import AsyncStatusStore, Created, NewRecord

BROKER = "amqp://elsewhere:Zq81mPx@127.0.0.1:1/elsewhere"


class Broker:
    """What the publisher connected to, declared and published."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.queues: dict[str, dict[str, Any]] = {}
        self.published: list[tuple[str, aio_pika.Message]] = []

    async def connect(self, url: str, **_: Any) -> Connection:
        self.urls.append(url)
        return Connection(self)


class Connection:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def channel(self, **_: Any) -> Channel:
        return Channel(self.broker)

    async def close(self) -> None:
        return None


class Channel:
    is_closed = False

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def declare_exchange(self, name: str, *_: Any, **__: Any) -> Exchange:
        return Exchange(self.broker)

    async def declare_queue(self, name: str, *, arguments: dict[str, Any], **_: Any) -> Queue:
        self.broker.queues[name] = arguments
        return Queue()


class Exchange:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def publish(self, message: aio_pika.Message, *, routing_key: str, **_: Any) -> None:
        self.broker.published.append((routing_key, message))


class Queue:
    async def bind(self, *_: Any, **__: Any) -> None:
        return None


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings read from the environment would fail (production, placeholder passwords)."""
    monkeypatch.setenv("APP_ENV", "production")
    get_settings.cache_clear()
    worker_celery.cache_clear()
    yield
    get_settings.cache_clear()
    worker_celery.cache_clear()


@pytest.mark.usefixtures("no_environment")
def test_create_app_publishes_through_a_celery_app_from_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = Broker()
    monkeypatch.setattr(aio_pika, "connect", broker.connect)

    async def created(self: AsyncStatusStore, records: list[NewRecord]) -> list[Created]:
        return [Created() for _ in records]

    monkeypatch.setattr(AsyncStatusStore, "create_many", created)
    settings = Settings(env="test", broker_url=BROKER, task_delivery_limit=7)

    app = create_app(settings)
    # The key check has its own tests (tests/integration/test_access.py).
    app.dependency_overrides[NEEDS[Scope.TASKS_SUBMIT]] = lambda: Caller("id", "unit", frozenset())
    with TestClient(app) as client:
        response = client.post("/api/async/process", json={"data": "x", "iterations": 3})

    assert response.status_code == 202, response.text
    assert broker.urls == [BROKER]
    # The queues come from the publisher's Celery app (task_queues), built from `settings`.
    assert set(broker.queues) == {"default", "imports", DEAD_QUEUE}
    assert broker.queues["default"]["x-delivery-limit"] == 7
    assert broker.queues["imports"]["x-delivery-limit"] == 7
    [(routing_key, message)] = broker.published
    assert routing_key == "default"
    assert message.headers["task"] == PROCESS_TASK
    assert message.correlation_id == response.json()["task_id"]


def test_create_celery_takes_everything_from_its_settings() -> None:
    import app.jobs  # noqa: F401  (the tasks bind to every app built)

    settings = Settings(
        env="test",
        broker_url=BROKER,
        task_delivery_limit=9,
        task_max_retries=4,
        process_soft_time_limit=40,
        process_time_limit=50,
        import_soft_time_limit=60,
        import_time_limit=70,
    )
    celery = create_celery(settings)

    assert celery.conf.broker_url == BROKER
    assert {q.queue_arguments["x-delivery-limit"] for q in celery.conf.task_queues} == {9}
    process, load = celery.tasks[PROCESS_TASK], celery.tasks[IMPORT_TASK]
    assert (process.max_retries, process.soft_time_limit, process.time_limit) == (4, 40, 50)
    assert (load.max_retries, load.soft_time_limit, load.time_limit) == (4, 60, 70)


@pytest.mark.usefixtures("no_environment")
def test_the_worker_command_line_loads_the_app_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("APP_BROKER_URL", BROKER)
    monkeypatch.setenv("APP_TASK_DELIVERY_LIMIT", "11")

    celery = find_app("app.celery_app")  # what `celery -A app.celery_app` loads

    assert celery is worker_celery()
    assert celery.conf.broker_url == BROKER
    assert {q.queue_arguments["x-delivery-limit"] for q in celery.conf.task_queues} == {11}
