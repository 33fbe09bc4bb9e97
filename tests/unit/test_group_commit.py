"""Group commit when RabbitMQ refuses some messages of a batch (a full queue)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.group_commit import Accepted, GroupCommit
from app.publisher import BrokerBusy, QueueFull
from app.status import Created, NewRecord

TASK = "app.tasks.process_data"


class FakeStatus:
    """Records created and discarded, in order, with what was answered by then."""

    def __init__(self, answers: list[asyncio.Future[Accepted]]) -> None:
        self.created: list[str] = []
        self.discarded: list[str] = []
        self.answered_when_discarded = -1
        self._answers = answers

    async def create_many(self, records: list[NewRecord]) -> list[Created]:
        self.created += [record.task_id for record in records]
        return [Created() for _ in records]

    async def discard_many(self, records: list[NewRecord]) -> None:
        self.answered_when_discarded = sum(answer.done() for answer in self._answers)
        self.discarded += [record.task_id for record in records]


class FakePublisher:
    """Confirms every message but those named in `refuse` (their error instead)."""

    def __init__(self, refuse: dict[str, BaseException]) -> None:
        self.refuse = refuse
        self.published: list[str] = []

    def message(self, task_id: str, name: str, args: list[Any], compression: Any = None) -> str:
        return task_id

    async def publish(self, message: str, routing_key: str) -> None:
        await asyncio.sleep(0)
        if message in self.refuse:
            raise self.refuse[message]
        self.published.append(message)


async def test_a_full_queue_refuses_its_submits_and_keeps_the_rest_of_the_batch() -> None:
    publisher = FakePublisher({"t1": QueueFull("nack"), "t3": BrokerBusy("slow")})
    answers: list[asyncio.Future[Accepted]] = []
    status = FakeStatus(answers)
    commit = GroupCommit(status, publisher, max_batch=4, linger_seconds=1, retry_after_seconds=2)  # type: ignore[arg-type]
    for n in range(4):
        answers.append(
            asyncio.ensure_future(
                commit.submit(TASK, owner="acme", cost=1, total=1, args=["x", 1], task_id=f"t{n}")
            )
        )
    outcomes = await asyncio.gather(*answers, return_exceptions=True)

    assert status.created == ["t0", "t1", "t2", "t3"]  # one batch
    assert outcomes[0] == Accepted("t0")
    assert isinstance(outcomes[1], QueueFull)
    assert outcomes[2] == Accepted("t2")
    assert isinstance(outcomes[3], BrokerBusy)
    # The refused one's record is gone before anyone was answered; the busy one's
    # stays (its message may still be routed), and so do the confirmed ones.
    assert status.discarded == ["t1"]
    assert status.answered_when_discarded == 0
    assert publisher.published == ["t0", "t2"]
    await commit.close()


async def test_a_submit_refused_as_full_is_not_retried() -> None:
    publisher = FakePublisher({"t0": QueueFull("nack")})
    status = FakeStatus([])
    commit = GroupCommit(status, publisher, max_batch=1, linger_seconds=0, retry_after_seconds=2)  # type: ignore[arg-type]
    with pytest.raises(QueueFull):
        await commit.submit(TASK, owner="acme", cost=1, total=1, args=["x", 1], task_id="t0")
    assert status.discarded == ["t0"]
    await commit.close()
