"""GET /health's probes (app.health): shared, cached, and quiet about addresses."""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import pytest
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from app.health import SharedProbe, category, check_all, probe, redact


class CountingCheck:
    def __init__(self, pause: float = 0) -> None:
        self.calls = 0
        self.pause = pause

    async def __call__(self) -> dict[str, str | None]:
        self.calls += 1
        await asyncio.sleep(self.pause)
        return {"redis": None if self.calls == 1 else "unreachable"}


async def test_concurrent_callers_share_one_probe_in_flight() -> None:
    check = CountingCheck(pause=0.05)
    shared = SharedProbe(check, ttl=0)
    results = await asyncio.gather(*(shared.get() for _ in range(50)))
    assert check.calls == 1
    assert all(result == {"redis": None} for result in results)
    await shared.get()  # ttl 0: the next caller probes again
    assert check.calls == 2


async def test_a_result_is_kept_for_the_ttl_then_probed_again() -> None:
    check = CountingCheck()
    shared = SharedProbe(check, ttl=0.2)
    assert await shared.get() == {"redis": None}
    assert await shared.get() == {"redis": None}
    assert check.calls == 1
    await asyncio.sleep(0.25)
    assert await shared.get() == {"redis": "unreachable"}
    assert check.calls == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_probe() -> None:
    check = CountingCheck(pause=0.1)
    shared = SharedProbe(check, ttl=10)
    impatient = asyncio.create_task(shared.get())
    patient = asyncio.create_task(shared.get())
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert await patient == {"redis": None}
    assert check.calls == 1


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), "timed out"),
        (aio_pika.exceptions.ProbableAuthenticationError("ACCESS_REFUSED"), "login refused"),
        (AuthenticationError("WRONGPASS invalid username-password pair"), "login refused"),
        (OperationFailure("Authentication failed.", code=18), "login refused"),
        (RedisConnectionError("Error 111 connecting to 10.0.0.5:6379."), "unreachable"),
        (ServerSelectionTimeoutError("db1:27017: [Errno 111] Connection refused"), "unreachable"),
        (aio_pika.exceptions.AMQPConnectionError(111, "Connect call failed"), "unreachable"),
    ],
)
def test_the_answer_is_a_category(exc: BaseException, expected: str) -> None:
    assert category(exc) == expected


def test_credentials_in_urls_are_masked() -> None:
    text = "cannot reach amqp://queuesvc:s3cret-pass@10.0.0.7:5672/queuesvc\ntraceback..."
    assert redact(text) == "cannot reach amqp://***@10.0.0.7:5672/queuesvc"


async def test_a_failed_probe_logs_the_reason_and_answers_only_the_category(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def down() -> None:
        raise RedisConnectionError("Error 111 connecting to redis://:hunter2@10.0.0.9:6379/0")

    async def ok() -> None:
        return None

    async def hangs() -> None:
        await asyncio.sleep(10)

    with caplog.at_level(logging.WARNING, logger="app.health"):
        reasons = await check_all(ok(), down(), hangs(), 0.05)
    assert reasons == {"mongodb": None, "redis": "unreachable", "rabbitmq": "timed out"}
    logged = caplog.text
    assert "redis is down" in logged
    assert "10.0.0.9:6379" in logged
    assert "hunter2" not in logged
    assert "rabbitmq is down" in logged
    assert await probe("mongodb", ok(), 1) is None
