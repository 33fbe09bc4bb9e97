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
from contextlib import suppress

import aio_pika
import pytest
from kombu import Exchange, Queue

from app import quotas
from app.celery_app import create_celery, queue_for
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
    status = AsyncStatusStore(
        redis,
        settings.status_ttl_seconds,
        settings.idempotency_ttl_seconds,
        quotas.from_settings(settings),
    )
    publisher = TaskPublisher.from_settings(settings)
    submits = GroupCommit.from_settings(settings, status, publisher)
    outcomes: Counter[str] = Counter()
    busy_ids: list[str] = []

    async def one(n: int) -> None:
        task_id = f"burst-{os.getpid()}-{n}"
        try:
            await submits.submit(
                TASK, owner="load", cost=1, total=1, args=["burst", 1], task_id=task_id
            )
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


RETURNS_QUEUE = "queuesvc-test-returns"


async def _publish_across_a_deleted_queue(settings: Settings) -> tuple[int, bool]:
    celery = create_celery(settings)
    exchange = Exchange("queuesvc-test", type="direct", durable=True)
    celery.conf.task_queues = (
        Queue(RETURNS_QUEUE, exchange, routing_key=RETURNS_QUEUE, durable=True),
    )
    publisher = TaskPublisher(
        celery,
        url=settings.broker_url.get_secret_value(),
        connect_timeout=2,
        confirm_timeout=5,
        max_retries=2,
        max_in_flight=8,
    )
    admin = await aio_pika.connect(settings.broker_url.get_secret_value())
    try:
        await publisher.publish(publisher.message("first", TASK, ["a", 1]), RETURNS_QUEUE)
        channel = await admin.channel()
        await channel.queue_delete(RETURNS_QUEUE)
        # Unroutable now: RabbitMQ returns it; the publisher declares the queue again.
        await publisher.publish(publisher.message("second", TASK, ["b", 1]), RETURNS_QUEUE)
        queue = await channel.declare_queue(RETURNS_QUEUE, passive=True)
        count = queue.declaration_result.message_count
        delivered = await queue.get(no_ack=True, fail=False)
        return count, delivered is not None and delivered.correlation_id == "second"
    finally:
        await publisher.close()
        with suppress(Exception):
            await (await admin.channel()).queue_delete(RETURNS_QUEUE)
        await admin.close()


def test_a_queue_deleted_under_the_publisher_is_declared_again(settings: Settings) -> None:
    """An unroutable message is never confirmed as taken (mandatory + on_return_raises):
    the publisher declares the queues again and the message lands."""
    count, second_landed = asyncio.run(_publish_across_a_deleted_queue(settings))
    assert count == 1, f"{count} messages in the re-declared queue"
    assert second_landed
