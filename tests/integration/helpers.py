"""Request and polling helpers shared by the integration tests."""

from __future__ import annotations

import time
from typing import Any

import httpx


def wait_status(
    client: httpx.Client, task_id: str, wanted: set[str], timeout: float = 60
) -> dict[str, Any]:
    """Poll the status route until the task reaches one of `wanted`; returns every state seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/async/status/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in wanted:
            body["seen"] = seen
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} stuck; states seen: {seen}; last: {body}")
        time.sleep(0.05)


def submit_process(client: httpx.Client, iterations: int, data: str = "heavy task") -> str:
    response = client.post("/api/async/process", json={"data": data, "iterations": iterations})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "PENDING"
    task_id: str = body["task_id"]
    return task_id


def post_like_curl(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    """POST a JSON body as the tutorial's `curl -d` sends it: under the form content type."""
    return client.post(
        path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
