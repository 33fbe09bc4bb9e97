"""Faults: RabbitMQ, MongoDB or Redis stops during a test, then comes back.

Each test restores what it stopped and waits until /health is healthy again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.helpers import submit_process, wait_status
from tests.integration.services import MongoEmulator, RedisServer, wait_until


def _healthy(client: httpx.Client) -> bool:
    return client.get("/health").status_code == 200


def _assert_clean_503(response: httpx.Response, names: str) -> None:
    assert response.status_code == 503, response.text
    assert names in response.json()["detail"]
    assert int(response.headers["retry-after"]) >= 1


def test_broker_down_gives_503_then_recovers(
    client: httpx.Client, rabbitmqctl: Callable[[str], None]
) -> None:
    rabbitmqctl("stop_app")
    started = time.monotonic()
    response = client.post("/api/async/process", json={"data": "x", "iterations": 5})
    elapsed = time.monotonic() - started
    _assert_clean_503(response, "RabbitMQ")
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


def test_mongodb_down_gives_503_and_outcomes_reach_mongodb_when_it_returns(
    client: httpx.Client, mongo: MongoEmulator | None, mongo_db: Any
) -> None:
    if mongo is None:
        pytest.skip("needs the test-managed MongoDB server to stop and start it")
    item = client.post("/api/items", json={"name": "survivor"}).json()
    mongo.stop()
    try:
        started = time.monotonic()
        response = client.get(f"/api/items/{item['id']}")
        _assert_clean_503(response, "MongoDB")
        assert time.monotonic() - started < 2.5
        assert client.post("/api/items", json={"name": "x"}).status_code == 503
        assert client.get("/health").json()["services"]["mongodb"] == "disconnected"
        assert client.get("/health/live").status_code == 200

        # Submitting needs only RabbitMQ and Redis. The outcome is claimed in
        # Redis; storing it in MongoDB fails and the task retries that part.
        task_id = submit_process(client, iterations=10)
        final = wait_status(client, task_id, {"SUCCESS", "FAILURE"}, timeout=60)
        assert final["status"] == "SUCCESS", final
        # /result agrees with /status, from Redis while MongoDB is away.
        result = client.get(f"/api/async/result/{task_id}")
        assert result.status_code == 200, result.text
        assert result.json()["status"] == "SUCCESS"
        assert result.json()["result"] == final["result"]
    finally:
        mongo.start()
    # The retried message stores the outcome claimed in Redis; it does not run again.
    wait_until(
        lambda: mongo_db["task_results"].find_one({"_id": task_id}) is not None,
        90,
        0.5,
        "the outcome stored in MongoDB",
    )
    stored = mongo_db["task_results"].find_one({"_id": task_id})
    assert stored["status"] == "SUCCESS"
    assert stored["result"] == final["result"]
    # Data written before the outage is still there (the emulator's SQLite engine).
    assert client.get(f"/api/items/{item['id']}").json()["name"] == "survivor"
    wait_until(lambda: _healthy(client), 30, 0.5, "health after MongoDB restart")


def test_redis_down_loses_no_accepted_task_and_pooled_connections_heal(
    client: httpx.Client, redis_server: RedisServer, mongo_db: Any
) -> None:
    # Long enough to be mid-run when Redis goes (about 1.4 ms per iteration).
    running = submit_process(client, iterations=3000)
    wait_status(client, running, {"PROGRESS"}, timeout=30)
    queued = [submit_process(client, iterations=20) for _ in range(3)]
    redis_server.stop()
    try:
        started = time.monotonic()
        response = client.post("/api/async/process", json={"data": "x", "iterations": 5})
        _assert_clean_503(response, "Redis")
        assert time.monotonic() - started < 2.5
        assert client.get("/health/live").status_code == 200
        time.sleep(3)  # the running task reports progress and tries to finish meanwhile
    finally:
        redis_server.start()
    # The API's pooled connections died with Redis: the next requests still pass.
    for _ in range(5):
        assert client.get(f"/api/async/status/{running}").status_code == 200
    assert client.post("/api/async/process", json={"data": "y", "iterations": 5}).status_code == 202
    for task_id in [running, *queued]:
        final = wait_status(client, task_id, {"SUCCESS", "FAILURE"}, timeout=120)
        assert final["status"] == "SUCCESS", final
    wait_until(
        lambda: mongo_db["task_results"].count_documents({"_id": {"$in": [running, *queued]}}) == 4,
        30,
        0.5,
        "every outcome stored in MongoDB",
    )


def test_redis_full_refuses_new_tasks_with_503(client: httpx.Client, redis_client: Any) -> None:
    # noeviction (the redis role's policy): at the limit, writes are refused.
    assert redis_client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    redis_client.config_set("maxmemory", "1")
    try:
        response = client.post("/api/async/process", json={"data": "x", "iterations": 5})
        _assert_clean_503(response, "full")
        assert client.get("/health/live").status_code == 200
    finally:
        redis_client.config_set("maxmemory", "0")
    assert client.post("/api/async/process", json={"data": "x", "iterations": 5}).status_code == 202
