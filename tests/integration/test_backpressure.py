"""A task queue at its length limit, against the real RabbitMQ: the API refuses
the excess with a clean 503 and keeps every task it accepted.

The limit is a policy on the test vhost, as the rabbitmq role sets it in a
deployment (max-length, overflow reject-publish), and no worker consumes the
queue meanwhile (the session's worker is told to cancel its consumer).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import httpx
import pytest
import redis
from celery import Celery

from app.celery_app import DEFAULT_QUEUE
from app.status import KEY_PREFIX, claim_key
from tests.integration.services import Process, bearer, wait_until

CAP = 5
SUBMITS = CAP + 6
POLICY = "queuesvc-test-limit"
# A quorum queue takes one message past max-length before it refuses
# (measured on 3.10.8; see the rabbitmq role's README).
QUORUM_OVERSHOOT = 1
FULL = "the task queue is full; the task was not accepted, try again later"


def _vhost(app_env: dict[str, str]) -> str:
    return unquote(urlsplit(app_env["APP_BROKER_URL"]).path.lstrip("/")) or "/"


def _records(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(KEY_PREFIX + "*", count=1000))


async def _depth_and_ids(url: str, take: bool) -> tuple[int, list[str]]:
    """Ready messages in the queue, and (take=True) their task ids, taking them off."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(DEFAULT_QUEUE, ensure=False)
        declared = await channel.declare_queue(DEFAULT_QUEUE, passive=True)
        depth = declared.declaration_result.message_count or 0
        ids: list[str] = []
        while take:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                break
            ids.append(str(message.headers["id"]))
        return depth, ids


@pytest.fixture
def capped_queue(
    app_env: dict[str, str], dev_env: dict[str, str], worker: Process
) -> Iterator[dict[str, Any]]:
    """The `default` queue with a max-length policy of CAP, empty, with no consumer;
    afterwards emptied, the policy cleared and the worker consuming again."""
    ctl = dev_env.get("APP_TEST_RABBITMQCTL", "rabbitmqctl")
    vhost = _vhost(app_env)
    url = app_env["APP_BROKER_URL"]

    def rabbitmqctl(*args: str) -> str:
        done = subprocess.run(
            [ctl, "-q", *args], check=True, timeout=60, capture_output=True, text=True
        )
        return done.stdout

    control = Celery(broker=url).control
    replies = control.cancel_consumer(DEFAULT_QUEUE, reply=True, timeout=10)
    assert replies, "the worker did not answer cancel_consumer"
    definition = {"max-length": CAP, "overflow": "reject-publish"}
    try:
        rabbitmqctl(
            "set_policy", "-p", vhost, "--apply-to", "queues", "--priority", "100",
            POLICY, f"^{re.escape(DEFAULT_QUEUE)}$", json.dumps(definition),
        )  # fmt: skip
        rabbitmqctl("purge_queue", "-p", vhost, DEFAULT_QUEUE)
        wait_until(
            lambda: POLICY in rabbitmqctl("list_queues", "-p", vhost, "name", "policy"),
            30,
            0.5,
            "the test policy applied to the queue",
        )
        yield {"url": url}
    finally:
        # Emptied while the limit is still in force: the queue then tells the
        # publishers it refused to resume; clearing the policy first would not
        # (rabbitmq-server#12206).
        rabbitmqctl("purge_queue", "-p", vhost, DEFAULT_QUEUE)
        time.sleep(0.5)
        rabbitmqctl("clear_policy", "-p", vhost, POLICY)
        control.add_consumer(DEFAULT_QUEUE, reply=True, timeout=10)


def test_a_full_queue_refuses_the_excess_and_keeps_what_it_accepted(
    api: str,
    capped_queue: dict[str, Any],
    redis_client: redis.Redis,
    api_keys: dict[str, dict[str, Any]],
) -> None:
    url = capped_queue["url"]
    records_before = _records(redis_client)
    accepted: list[str] = []
    refused: list[httpx.Response] = []
    refused_keys: list[str] = []
    depths: list[int] = []
    user = api_keys["user"]
    with httpx.Client(base_url=api, timeout=15, headers=bearer(user)) as http:
        for n in range(SUBMITS):
            key = f"backpressure-{uuid.uuid4().hex}"
            started = time.monotonic()
            response = http.post(
                "/api/async/process",
                json={"data": f"flood {n}", "iterations": 1},
                headers={"Idempotency-Key": key},
            )
            assert time.monotonic() - started < 5, "a refused submit must not hang"
            if response.status_code == 202:
                accepted.append(response.json()["task_id"])
            else:
                refused.append(response)
                refused_keys.append(key)
            depths.append(asyncio.run(_depth_and_ids(url, take=False))[0])

        assert refused, f"nothing refused past a cap of {CAP}: depths {depths}"
        for response in refused:
            assert response.status_code == 503, response.text
            assert response.json() == {"detail": FULL}
            assert int(response.headers["retry-after"]) >= 1
        # Every accepted task is queued and still known (PENDING).
        for task_id in accepted:
            status = http.get(f"/api/async/status/{task_id}")
            assert status.status_code == 200, status.text
            assert status.json()["status"] == "PENDING"
        metrics = http.get("/metrics").text

    assert CAP <= len(accepted) <= CAP + QUORUM_OVERSHOOT, (len(accepted), depths)
    assert max(depths) <= CAP + QUORUM_OVERSHOOT, depths
    # Nothing of a refused submit is left: no status record, no key claim.
    assert _records(redis_client) - records_before == len(accepted)
    for key in refused_keys:
        assert not redis_client.exists(claim_key(user["owner"], key))
    counted = re.search(r"^queuesvc_queue_full_total (\S+)$", metrics, re.MULTILINE)
    assert counted, "queuesvc_queue_full_total missing from /metrics"
    assert float(counted.group(1)) >= len(refused)

    depth, queued = asyncio.run(_depth_and_ids(url, take=True))
    assert depth == len(accepted)
    assert sorted(queued) == sorted(accepted)
