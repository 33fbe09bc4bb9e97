"""Faults: the broker or MongoDB stops during a test, then comes back.

Each test restores what it stopped and waits until /health is healthy again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.integration.helpers import submit_process, wait_status
from tests.integration.services import MongoEmulator, wait_until


def _healthy(client: httpx.Client) -> bool:
    return client.get("/health").status_code == 200


def test_broker_down_gives_503_then_recovers(
    client: httpx.Client, rabbitmqctl: Callable[[str], None]
) -> None:
    rabbitmqctl("stop_app")
    started = time.monotonic()
    response = client.post("/api/async/process", json={"data": "x", "iterations": 5})
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert "RabbitMQ" in response.json()["detail"]
    assert elapsed < 5, f"submit took {elapsed:.1f}s with the broker down"
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["services"]["rabbitmq"] == "disconnected"
    assert health.json()["status"] == "unhealthy"

    rabbitmqctl("start_app")
    wait_until(lambda: _healthy(client), 60, 0.5, "health after broker restart")
    task_id = submit_process(client, iterations=10)
    # The worker reconnects by itself and runs the task.
    assert wait_status(client, task_id, {"SUCCESS"}, timeout=90)["status"] == "SUCCESS"


def test_mongodb_down_gives_503_and_tasks_retry_until_it_returns(
    client: httpx.Client, mongo: MongoEmulator | None, mongo_db: Any
) -> None:
    if mongo is None:
        import pytest

        pytest.skip("needs the test-managed MongoDB server to stop and start it")
    item = client.post("/api/items", json={"name": "survivor"}).json()
    mongo.stop()
    try:
        started = time.monotonic()
        response = client.get(f"/api/items/{item['id']}")
        assert response.status_code == 503, response.text
        assert "MongoDB" in response.json()["detail"]
        assert time.monotonic() - started < 5
        assert client.post("/api/items", json={"name": "x"}).status_code == 503
        assert client.get("/health").json()["services"]["mongodb"] == "disconnected"

        # Submitting needs only RabbitMQ and Redis; storing the result fails
        # and the task retries with backoff.
        task_id = submit_process(client, iterations=10)
        retrying = wait_status(client, task_id, {"RETRY", "FAILURE"}, timeout=60)
        assert retrying["status"] == "RETRY", retrying
        assert retrying["error"]
    finally:
        mongo.start()
    final = wait_status(client, task_id, {"SUCCESS", "FAILURE"}, timeout=90)
    assert final["status"] == "SUCCESS", final
    assert final["retries"] >= 1
    assert mongo_db["task_results"].find_one({"_id": task_id})["status"] == "SUCCESS"
    # Data written before the outage is still there (the emulator's SQLite engine).
    assert client.get(f"/api/items/{item['id']}").json()["name"] == "survivor"
    wait_until(lambda: _healthy(client), 30, 0.5, "health after MongoDB restart")
