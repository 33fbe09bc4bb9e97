"""The API's submit path (group commit and publisher) under a burst, against
the real RabbitMQ and Redis.

A live broker that confirms slower than APP_PUBLISH_CONFIRM_TIMEOUT_SECONDS
is load: the submits it could not confirm in time are refused as busy
(BrokerBusy), never reported as the broker being down, and their status
records stay (the message may still be routed). The broker-down case is in
test_faults.py.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator

import aio_pika
import pytest

from app.celery_app import queue_for
from app.group_commit import GroupCommit
from app.publisher import BrokerBusy, BrokerUnavailable, TaskPublisher
from app.redis_client import async_client
from app.settings import Settings
from app.status import KEY_PREFIX, AsyncStatusStore

TASK = "app.tasks.process"
BURST = 1000
# Far below the time RabbitMQ takes to confirm a burst of BURST persistent
# messages here (a few hundred ms), far above its first confirm (~ms).
CONFIRM_TIMEOUT = 0.03


@pytest.fixture
def settings(app_env: dict[str, str]) -> Iterator[Settings]:
    saved = dict(os.environ)
    os.environ.update(app_env)
    os.environ["APP_PUBLISH_CONFIRM_TIMEOUT_SECONDS"] = str(CONFIRM_TIMEOUT)
    os.environ["APP_PUBLISH_MAX_IN_FLIGHT"] = str(BURST // 2)
    try:
        yield Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def _burst(settings: Settings) -> tuple[Counter[str], list[str], int]:
    redis = async_client(settings)
    status = AsyncStatusStore(redis, settings.status_ttl_seconds, settings.idempotency_ttl_seconds)
    publisher = TaskPublisher.from_settings(settings)
    submits = GroupCommit(
        status,
        publisher,
        max_batch=settings.submit_batch_max,
        linger_seconds=settings.submit_linger_ms / 1000,
    )
    outcomes: Counter[str] = Counter()
    busy_ids: list[str] = []

    async def one(n: int) -> None:
        task_id = f"burst-{os.getpid()}-{n}"
        try:
            await submits.submit(TASK, total=1, args=["burst", 1], task_id=task_id)
            outcomes["accepted"] += 1
        except BrokerBusy:
            outcomes["busy"] += 1
            busy_ids.append(task_id)
        except BrokerUnavailable:
            outcomes["unavailable"] += 1

    try:
        # One submit first: the connection and the queues exist before the burst.
        await one(-1)
        await asyncio.gather(*(one(n) for n in range(BURST)))
        kept = sum([await redis.exists(KEY_PREFIX + task_id) for task_id in busy_ids])
    finally:
        await submits.close()
        await publisher.close()
        await _purge(settings)
        await redis.aclose()
    return outcomes, busy_ids, kept


async def _purge(settings: Settings) -> None:
    """Drop the burst's messages so no worker of this session spends time on them."""
    connection = await aio_pika.connect(settings.broker_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_for(TASK), ensure=False)
        await queue.purge()


def test_a_slow_confirm_from_a_live_broker_is_busy_not_unavailable(settings: Settings) -> None:
    outcomes, busy_ids, kept = asyncio.run(_burst(settings))
    assert outcomes["unavailable"] == 0, outcomes
    assert outcomes["accepted"] > 0, outcomes
    assert outcomes["busy"] > 0, f"no submit outlasted {CONFIRM_TIMEOUT} s: {outcomes}"
    assert outcomes["accepted"] + outcomes["busy"] == BURST + 1
    assert kept == len(busy_ids), "a busy submit's status record was discarded"
