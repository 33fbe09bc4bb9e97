"""Worker throughput end to end, against the broker's own rate, and what bounds it.

A real Celery worker of the service (the lab unit's command: one queue,
--concurrency 2, prefork) runs while N short tasks (iterations=1) are submitted
through the API; the figure is tasks completed per second from the first submit
to the last SUCCESS stored in MongoDB (task_results.finished_at, written by the
worker). Over the same stretch the CPU time of the worker and its pool, the API,
the MongoDB emulator, redis-server and RabbitMQ's beam.smp is sampled from
/proc: the busiest is named as the bound. Then the raw rate of the broker: N
small persistent messages published to a throwaway quorum queue (the kind the
service's queues are) and consumed with kombu, with the worker's prefetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from app.celery_app import DEFAULT_QUEUE
from app.db import TASK_RESULTS
from bench import cpu
from bench.apikeys import authorization
from bench.broker import RawRate, consumers, empty_queues, raw_rate
from tests.integration.services import Process, celery_worker, wait_until

WORKER_CONCURRENCY = 2
# The service's workers reserve one task per pool process (worker_prefetch_multiplier=1).
WORKER_PREFETCH = WORKER_CONCURRENCY
SUBMIT_CONCURRENCY = 16
SUBMIT_BODY = {"data": "benchmark payload", "iterations": 1}
WORKER_READY_LIMIT_S = 60.0
POLL_INTERVAL_S = 0.25
FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")
WORKER = "celery worker + pool"


def results_limit_s(tasks: int) -> float:
    """How long to wait for the results: generous for a slow emulator, still bounded."""
    return 60.0 + tasks * 0.5


def worker_process(env: dict[str, str], log: Path) -> Process:
    """The worker as the lab's unit starts it, minus the state file, quieter."""
    return celery_worker(
        env,
        log,
        DEFAULT_QUEUE,
        concurrency=WORKER_CONCURRENCY,
        name="bench",
        log_level="warning",
        extra=("--without-heartbeat",),
    )


@dataclass(frozen=True)
class EndToEnd:
    tasks: int  # submitted
    accepted: int  # answered 202
    succeeded: int  # SUCCESS stored in MongoDB in time
    other: int  # another final state (FAILURE, REVOKED)
    submit_seconds: float  # first submit to the last answer
    seconds: float  # first submit to the last SUCCESS stored

    @property
    def rate(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0


def end_to_end(
    tasks: int,
    accepted: int,
    started: float,
    answered: float,
    outcomes: Sequence[tuple[str, float]],
) -> EndToEnd:
    """From the wall-clock start of the first submit, its last answer and the
    stored outcomes (status, finished_at as a timestamp)."""
    done = [at for status, at in outcomes if status == "SUCCESS"]
    return EndToEnd(
        tasks=tasks,
        accepted=accepted,
        succeeded=len(done),
        other=len(outcomes) - len(done),
        submit_seconds=answered - started,
        seconds=max(done) - started if done else 0.0,
    )


async def _submit(base: str, key: str, tasks: int) -> list[str]:
    ids: list[str] = []
    left = tasks
    limits = httpx.Limits(max_connections=SUBMIT_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base, timeout=30, limits=limits, headers=authorization(key)
    ) as client:

        async def sender() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                answer = await client.post("/api/async/process", json=SUBMIT_BODY)
                if answer.status_code == 202:
                    ids.append(answer.json()["task_id"])

        await asyncio.gather(*(sender() for _ in range(SUBMIT_CONCURRENCY)))
    return ids


def submit(base: str, key: str, tasks: int) -> tuple[list[str], float, float]:
    """Submit through the API with `key`: the accepted task ids, wall-clock start and end."""
    started = time.time()
    ids = asyncio.run(_submit(base, key, tasks))
    return ids, started, time.time()


class Results:
    """The service's task_results collection, watched cheaply: counting by a
    filter makes the emulator decode every document (some 70 ms a call for a
    few hundred), enough to slow the workers whose rate is measured; the
    estimated count is the collection's size (about 1 ms). A document there
    is a final outcome."""

    def __init__(self, mongo_uri: str, database: str) -> None:
        self._client: MongoClient[dict[str, Any]] = MongoClient(
            mongo_uri, tz_aware=True, serverSelectionTimeoutMS=5000
        )
        self._results = self._client[database][TASK_RESULTS]

    def count(self) -> int:
        return self._results.estimated_document_count()

    def outcomes(self, ids: list[str]) -> list[tuple[str, float]]:
        """The tasks' stored outcomes: (status, finished_at as a timestamp)."""
        query = {"_id": {"$in": ids}, "status": {"$in": list(FINAL_STATES)}}
        found = []
        for doc in self._results.find(query, {"status": 1, "finished_at": 1}):
            finished: datetime = doc["finished_at"]
            found.append((str(doc["status"]), finished.timestamp()))
        return found

    def wait(self, before: int, ids: list[str], limit_s: float) -> list[tuple[str, float]]:
        """Wait (boundedly) for the outcomes of `ids`: the cheap count first, the
        tasks themselves once it says they may all be there (another task, one
        submitted late in an earlier run, may have been counted)."""
        deadline = time.monotonic() + limit_s
        while True:
            if self.count() - before >= len(ids):
                found = self.outcomes(ids)
                if len(found) >= len(ids):
                    return found
            if time.monotonic() >= deadline:
                return self.outcomes(ids)
            time.sleep(POLL_INTERVAL_S)

    def close(self) -> None:
        self._client.close()


def report(e2e: EndToEnd, raw: RawRate, usage: cpu.Usage) -> list[str]:
    lines = [
        f"end to end, {e2e.tasks} tasks (iterations=1) through POST /api/async/process "
        f"to SUCCESS in MongoDB: {e2e.rate:.0f} tasks/s ({e2e.succeeded} in {e2e.seconds:.2f} s;"
        f" submits answered in {e2e.submit_seconds:.2f} s)",
    ]
    missing = e2e.tasks - e2e.succeeded
    if missing:
        lines.append(
            f"  not counted: {e2e.tasks - e2e.accepted} submits not accepted, {e2e.other} ended "
            f"otherwise than SUCCESS, {e2e.accepted - e2e.succeeded - e2e.other} not done in time"
        )
    lines += [
        f"raw kombu, {raw.messages} persistent messages to a quorum queue, published then "
        f"consumed+acked (prefetch {WORKER_PREFETCH}): {raw.rate:.0f} messages/s (publish "
        f"{raw.messages / raw.publish_seconds:.0f}/s, consume "
        f"{raw.messages / raw.consume_seconds:.0f}/s)",
        f"end to end / raw broker: {e2e.rate / raw.rate:.1%}",
        f"CPU over the {usage.seconds:.1f} s of the end-to-end run, % of one core "
        f"(host: {usage.host_percent:.0f}% of {100 * usage.cores}% busy, other users "
        f"included; {usage.iowait_percent:.0f}% waiting for I/O):",
    ]
    for name, percent in sorted(usage.percent.items(), key=lambda item: -item[1]):
        lines.append(f"  {name:36} {percent:6.0f}%  (of {usage.limit[name]:.0f}% it can use)")
    lines.append(usage.verdict())
    return lines


def run_stage(
    *,
    base: str,
    key: str,
    env: dict[str, str],
    workdir: Path,
    mongo_uri: str,
    database: str,
    tasks: int,
    groups: Mapping[str, cpu.Group],
) -> list[str]:
    """Start a worker, run N tasks end to end with CPU sampled, then the raw broker rate."""
    broker_url = env["APP_BROKER_URL"]
    # Submits still in flight when a wrk run ended were queued after its purge.
    empty_queues(broker_url, [DEFAULT_QUEUE])
    others = consumers(broker_url, DEFAULT_QUEUE) or 0
    if others:
        # Another worker on this broker would take some of the tasks (and store
        # their results elsewhere): the figure would be wrong.
        return [f"worker throughput skipped: {others} other consumer(s) on queue {DEFAULT_QUEUE!r}"]
    worker = worker_process(env, workdir / "worker.log")
    worker.start()
    try:

        def ready() -> bool:
            if not worker.running():
                raise RuntimeError("the worker exited:\n" + worker.tail())
            return (consumers(broker_url, DEFAULT_QUEUE) or 0) >= 1

        wait_until(ready, WORKER_READY_LIMIT_S, 0.2, "worker consuming")
        assert worker.proc is not None
        pool = cpu.Group(cpu.tree(worker.proc.pid), WORKER_CONCURRENCY)
        sampler = cpu.Sampler({WORKER: pool, **groups})
        results = Results(mongo_uri, database)
        try:
            before = results.count()
            sampler.start()
            ids, started, answered = submit(base, key, tasks)
            found = results.wait(before, ids, results_limit_s(tasks))
            usage = sampler.stop()
        finally:
            results.close()
    finally:
        worker.stop()
    e2e = end_to_end(tasks, len(ids), started, answered, found)
    raw = raw_rate(broker_url, tasks, WORKER_PREFETCH, {"x-queue-type": "quorum"})
    return report(e2e, raw, usage)
