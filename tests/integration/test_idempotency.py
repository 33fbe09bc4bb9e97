"""Idempotency-Key and group commit on the submit routes, against the API under
gunicorn (two processes) with the real Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import redis

from app.status import IDEMPOTENCY_PREFIX
from tests.integration.helpers import wait_status
from tests.integration.services import bearer, wait_until

PROCESS = "/api/async/process"


def _key() -> str:
    # Keys live for 24 h in the shared test Redis: a new one per test and run.
    return f"test-{uuid.uuid4()}"


def test_same_key_same_body_returns_the_first_task_with_200(client: httpx.Client) -> None:
    key, body = _key(), {"data": "once", "iterations": 2}
    first = client.post(PROCESS, json=body, headers={"Idempotency-Key": key})
    again = client.post(PROCESS, json=body, headers={"Idempotency-Key": key})

    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert wait_status(client, first.json()["task_id"], {"SUCCESS"})["status"] == "SUCCESS"
    # Still the same task once it has run.
    late = client.post(PROCESS, json=body, headers={"Idempotency-Key": key})
    assert (late.status_code, late.json()["task_id"]) == (200, first.json()["task_id"])


def test_same_key_different_body_is_422(client: httpx.Client) -> None:
    key = _key()
    first = client.post(
        PROCESS, json={"data": "a", "iterations": 1}, headers={"Idempotency-Key": key}
    )
    other = client.post(
        PROCESS, json={"data": "b", "iterations": 1}, headers={"Idempotency-Key": key}
    )

    assert first.status_code == 202, first.text
    assert other.status_code == 422, other.text
    [error] = other.json()["detail"]
    assert error["loc"] == ["header", "Idempotency-Key"]
    assert error["type"] == "idempotency_conflict"
    assert "different request" in error["msg"]


def test_a_race_on_one_key_creates_one_task(
    api: str, worker: Any, api_keys: dict[str, Any]
) -> None:
    """40 requests with one key at once, spread over both gunicorn processes (and
    so over batches of both): one 202, the rest 200 with the same task."""
    key, body = _key(), {"data": "race", "iterations": 1}

    async def race() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(
            base_url=api, timeout=30, limits=limits, headers=bearer(api_keys["user"])
        ) as http:
            return await asyncio.gather(
                *(
                    http.post(PROCESS, json=body, headers={"Idempotency-Key": key})
                    for _ in range(40)
                )
            )

    responses = asyncio.run(race())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 39 + [202], codes
    assert len({r.json()["task_id"] for r in responses}) == 1


def test_import_takes_a_key_too(client: httpx.Client) -> None:
    key, csv = _key(), "external_id,name\nidem-1,first\n"

    def upload(text: str) -> httpx.Response:
        files = {"file": ("items.csv", text.encode(), "text/csv")}
        return client.post("/api/async/import", files=files, headers={"Idempotency-Key": key})

    first, again, changed = upload(csv), upload(csv), upload(csv + "idem-2,second\n")
    assert first.status_code == 202, first.text
    assert (again.status_code, again.json()) == (200, first.json())
    assert changed.status_code == 422, changed.text


def test_malformed_keys_are_422(client: httpx.Client) -> None:
    for bad in ("has space", "x" * 256, ""):
        response = client.post(
            PROCESS, json={"data": "x", "iterations": 1}, headers={"Idempotency-Key": bad}
        )
        assert response.status_code == 422, (bad, response.text)


def test_a_key_is_released_when_the_broker_refuses(
    client: httpx.Client, rabbitmqctl: Any, redis_client: redis.Redis
) -> None:
    """A submit that fails leaves neither its status record nor its key's claim:
    the retry with the same key creates the task."""
    key, body = _key(), {"data": "retry me", "iterations": 1}
    records_before = len(list(redis_client.scan_iter("queuesvc:task:*", count=1000)))
    rabbitmqctl("stop_app")
    try:
        refused = client.post(PROCESS, json=body, headers={"Idempotency-Key": key})
    finally:
        rabbitmqctl("start_app")
    assert refused.status_code == 503, refused.text
    assert not redis_client.exists(IDEMPOTENCY_PREFIX + key)
    assert len(list(redis_client.scan_iter("queuesvc:task:*", count=1000))) == records_before

    retries: list[httpx.Response] = []

    def retried() -> bool:
        retries.append(client.post(PROCESS, json=body, headers={"Idempotency-Key": key}))
        return retries[-1].status_code != 503

    wait_until(retried, 60, 0.5, "a submit after the broker's restart")
    assert retries[-1].status_code == 202, retries[-1].text
    task_id = retries[-1].json()["task_id"]
    assert wait_status(client, task_id, {"SUCCESS"})["status"] == "SUCCESS"


def test_submits_that_arrive_together_are_committed_together(
    api: str, worker: Any, api_keys: dict[str, Any]
) -> None:
    """100 submits at once: the batches hold more than one submit each on average
    (queuesvc_submit_batch_size in /metrics), and every submit is its own task."""

    def batches() -> tuple[float, float]:
        text = httpx.get(f"{api}/metrics").text
        count = re.search(r"^queuesvc_submit_batch_size_count (\S+)$", text, re.M)
        total = re.search(r"^queuesvc_submit_batch_size_sum (\S+)$", text, re.M)
        return (float(count[1]) if count else 0.0, float(total[1]) if total else 0.0)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=api, timeout=30, limits=limits, headers=bearer(api_keys["user"])
        ) as http:
            return await asyncio.gather(
                *(http.post(PROCESS, json={"data": f"g{n}", "iterations": 1}) for n in range(100))
            )

    count_before, sum_before = batches()
    responses = asyncio.run(burst())
    count_after, sum_after = batches()

    accepted = [r for r in responses if r.status_code == 202]
    assert {r.status_code for r in responses} <= {202, 503}
    assert len({r.json()["task_id"] for r in accepted}) == len(accepted)
    submits, commits = sum_after - sum_before, count_after - count_before
    assert submits == len(accepted), (submits, len(accepted))
    assert commits < submits, f"{submits:.0f} submits in {commits:.0f} batches"
