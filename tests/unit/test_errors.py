"""The error handlers (app.errors) on a tiny real app: a full queue is a clean 503."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import errors
from app.metrics import QUEUE_FULL
from app.publisher import QueueFull


def test_a_full_queue_is_a_503_with_retry_after_and_is_counted() -> None:
    app = FastAPI()

    @app.post("/submit")
    async def submit() -> None:
        raise QueueFull("RabbitMQ refused the message: nack")

    errors.install(app, retry_after_seconds=7)
    before = QUEUE_FULL._value.get()
    response = TestClient(app).post("/submit")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json() == {
        "detail": "the task queue is full; the task was not accepted, try again later"
    }
    assert QUEUE_FULL._value.get() == before + 1
