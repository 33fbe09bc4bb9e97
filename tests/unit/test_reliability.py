"""What counts as transient, the retry backoff, and how a dead letter is described."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis
from kombu.message import Message
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure

from app.deadletters import describe_dead
from app.lifecycle import retry_countdown
from app.transient import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        redis.ConnectionError("refused"),
        redis.TimeoutError("slow"),
        redis.exceptions.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        redis.exceptions.OutOfMemoryError("OOM command not allowed"),
        redis.ResponseError("MASTERDOWN Link with MASTER is down"),
        AutoReconnect("connection reset"),
        OperationFailure("not primary", 10107, {"errorLabels": ["RetryableWriteError"]}),
    ],
)
def test_a_dependency_coming_back_is_transient(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
        DuplicateKeyError("E11000 duplicate key"),
        OperationFailure("bad query", 2),
        ValueError("bad input"),
        KeyError("missing"),
    ],
)
def test_a_real_failure_is_not_transient(exc: Exception) -> None:
    assert not is_transient(exc)


def test_retry_countdown_grows_with_equal_jitter_and_is_capped() -> None:
    for retries in range(12):
        ceiling = min(60.0, 2.0**retries)
        for _ in range(50):
            countdown = retry_countdown(retries, 60)
            assert ceiling / 2 <= countdown <= ceiling
    # Ten retries wait long enough to ride out minutes of an outage, not hours.
    shortest = sum(min(60.0, 2.0**n) / 2 for n in range(10))
    assert 120 < shortest < 300


def _message(body: bytes, headers: dict[str, Any], **properties: Any) -> Message:
    return Message(
        body=body,
        headers=headers,
        content_type="application/json",
        content_encoding="utf-8",
        properties=properties,
    )


def test_a_task_over_its_delivery_limit_is_replayable() -> None:
    task_id = str(uuid.uuid4())
    body = json.dumps([["data", 20], {}, {}]).encode()
    letter = describe_dead(
        _message(
            body,
            {
                "id": task_id,
                "task": "app.tasks.process_data",
                "retries": 2,
                "x-first-death-reason": "delivery_limit",
                "x-first-death-queue": "default",
            },
        )
    )
    assert letter["task_id"] == task_id
    assert letter["args"] == ["data", 20]
    assert letter["retries"] == 2
    assert letter["reason"] == "delivery_limit"
    assert "delivered too often" in letter["error"]


def test_an_unknown_task_is_not_replayable() -> None:
    letter = describe_dead(
        _message(
            json.dumps([[1], {}, {}]).encode(),
            {"id": str(uuid.uuid4()), "task": "app.tasks.gone"},
        )
    )
    assert letter["args"] is None
    assert "unknown task 'app.tasks.gone'" in letter["error"]


def test_garbage_gets_an_id_and_a_reason() -> None:
    letter = describe_dead(
        _message(
            b"{not json",
            {"x-death": [{"reason": "rejected", "queue": "default", "count": 1}]},
        )
    )
    assert uuid.UUID(letter["task_id"])
    assert letter["task"] == ""
    assert letter["args"] is None
    assert letter["reason"] == "rejected"
    assert letter["queue"] == "default"
    assert "not a task message" in letter["error"]
