"""Messages that cannot be run end dead-lettered, FAILURE, listed, and replayable."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.helpers import wait_status
from tests.integration.services import publish


@pytest.fixture
def client(admin_client: httpx.Client) -> httpx.Client:
    """Dead letters are the operators': an admin key."""
    return admin_client


def _dead_letter(client: httpx.Client, task_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/api/async/dead", params={"limit": 200})
        assert response.status_code == 200, response.text
        for letter in response.json()["items"]:
            if letter["task_id"] == task_id:
                return dict(letter)
        assert time.monotonic() < deadline, f"{task_id} never listed in /api/async/dead"
        time.sleep(0.2)


def test_unknown_task_is_dead_lettered_and_failed(
    client: httpx.Client, app_env: dict[str, str]
) -> None:
    task_id = str(uuid.uuid4())
    publish(
        app_env,
        [
            {
                "task": "app.tasks.no_such_task",
                "id": task_id,
                "args": [1],
                "exchange": "queuesvc",
                "routing_key": "default",
            }
        ],
    )
    letter = _dead_letter(client, task_id)
    assert letter["task"] == "app.tasks.no_such_task"
    assert letter["queue"] == "default"
    assert letter["reason"] == "rejected"
    assert letter["replayable"] is False
    status = client.get(f"/api/async/status/{task_id}").json()
    assert status["status"] == "FAILURE"
    assert "dead-lettered" in status["error"]
    assert client.post(f"/api/async/dead/{task_id}/replay").status_code == 409


def test_undecodable_message_is_dead_lettered_not_dropped(
    client: httpx.Client, app_env: dict[str, str]
) -> None:
    before = client.get("/api/async/dead").json()["total"]
    publish(app_env, [{"raw": "{not json", "exchange": "queuesvc", "routing_key": "default"}])
    deadline = time.monotonic() + 60
    while client.get("/api/async/dead").json()["total"] == before:
        assert time.monotonic() < deadline, "the undecodable message was not dead-lettered"
        time.sleep(0.2)
    newest = client.get("/api/async/dead", params={"limit": 1}).json()["items"][0]
    assert newest["task"] == ""
    assert "not a task message" in newest["error"]
    assert newest["replayable"] is False


def test_dead_lettered_task_is_replayed_once(client: httpx.Client, app_env: dict[str, str]) -> None:
    # What RabbitMQ sends to the dead-letter exchange once a message of this task
    # exceeded the delivery limit (it kept killing its worker).
    task_id = str(uuid.uuid4())
    publish(
        app_env,
        [
            {
                "task": "app.tasks.process_data",
                "id": task_id,
                "args": ["replay me", 20],
                "headers": {
                    "x-first-death-reason": "delivery_limit",
                    "x-first-death-queue": "default",
                },
                "exchange": "queuesvc.dead",
                "routing_key": "default",
            }
        ],
    )
    letter = _dead_letter(client, task_id)
    assert letter["reason"] == "delivery_limit"
    assert letter["replayable"] is True
    status = client.get(f"/api/async/status/{task_id}").json()
    assert status["status"] == "FAILURE"
    assert "delivered too often" in status["error"]
    assert client.get(f"/api/async/result/{task_id}").json()["status"] == "FAILURE"

    replayed = client.post(f"/api/async/dead/{task_id}/replay")
    assert replayed.status_code == 202, replayed.text
    new_id = replayed.json()["task_id"]
    assert replayed.json()["replay_of"] == task_id
    assert new_id != task_id
    final = wait_status(client, new_id, {"SUCCESS", "FAILURE"}, timeout=60)
    assert final["status"] == "SUCCESS", final
    assert final["result"]["total"] == 20
    again = client.post(f"/api/async/dead/{task_id}/replay")
    assert again.status_code == 409
    assert new_id in again.json()["detail"]
    assert _dead_letter(client, task_id)["replayed_as"] == new_id


def test_unknown_dead_letter_is_404(client: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    assert client.post(f"/api/async/dead/{missing}/replay").status_code == 404
    assert client.get("/api/async/dead", params={"limit": 0}).status_code == 422
