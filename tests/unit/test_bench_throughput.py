"""The worker throughput stage's figures and report, from hand-made outcomes."""

from __future__ import annotations

import pytest

from bench.broker import RawRate
from bench.cpu import Usage
from bench.throughput import end_to_end, report, results_limit_s


def test_end_to_end_counts_from_the_first_submit_to_the_last_success() -> None:
    e2e = end_to_end(
        tasks=5,
        accepted=4,
        started=1000.0,
        answered=1000.5,
        outcomes=[("SUCCESS", 1001.0), ("SUCCESS", 1002.0), ("FAILURE", 1003.0)],
    )
    assert (e2e.succeeded, e2e.other, e2e.submit_seconds, e2e.seconds) == (2, 1, 0.5, 2.0)
    assert e2e.rate == 1.0


def test_nothing_done() -> None:
    e2e = end_to_end(tasks=3, accepted=3, started=1.0, answered=2.0, outcomes=[])
    assert (e2e.succeeded, e2e.seconds, e2e.rate) == (0, 0.0, 0.0)


def test_the_wait_is_bounded_and_grows_with_the_tasks() -> None:
    assert 60 < results_limit_s(10) < results_limit_s(1000) < 1000


def test_report() -> None:
    e2e = end_to_end(10, 10, 0.0, 0.2, [("SUCCESS", 0.1 * n) for n in range(1, 9)])
    raw = RawRate(messages=10, publish_seconds=0.01, consume_seconds=0.04)
    usage = Usage(
        seconds=1.0,
        percent={"worker": 120.0, "mongo": 90.0},
        limit={"worker": 200.0, "mongo": 100.0},
        host_percent=150.0,
        cores=2,
        iowait_percent=3.0,
    )
    lines = report(e2e, raw, usage)
    assert lines[0].endswith("10 tasks/s (8 in 0.80 s; submits answered in 0.20 s)")
    assert lines[1] == (
        "  not counted: 0 submits not accepted, 0 ended otherwise than SUCCESS, 2 not done in time"
    )
    assert raw.rate == pytest.approx(200.0)
    assert "200 messages/s (publish 1000/s, consume 250/s)" in lines[2]
    assert lines[3] == "end to end / raw broker: 5.0%"
    assert "(host: 150% of 200% busy, other users included; 3% waiting for I/O)" in lines[4]
    assert lines[5].startswith("  worker")
    assert lines[6].startswith("  mongo")
    assert lines[-1].startswith("bound: worker, the busiest (120% of one core, 60% of")
