"""The flood measurement's parts: the queue cap held equal to the rabbitmq
role's, its policy and the listing that shows it in force, the vhost of a
broker URL, the paced client (against a small server) and its percentiles,
and the printed lines."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from app.settings import Settings
from bench.flood import calm_lines, cap_in_force, deployed_quotas, depth_lines, flood_lines
from bench.paced import Answer, paced_posts, percentile
from bench.queuecap import DEFAULT_QUEUE_CAP, QueueCap, policy_of, vhost_of
from bench.wrkparse import SocketErrors, WrkRun
from tests.unit.loopback_http import serving

REPO = Path(__file__).resolve().parents[2]
ARGS = argparse.Namespace(duration=10, connections=64, iterations=1000, calm_rate=5.0)


def test_the_cap_is_the_rabbitmq_roles() -> None:
    defaults = yaml.safe_load((REPO / "roles/rabbitmq/defaults/main.yml").read_text())
    limits = {entry["queue"]: entry for entry in defaults["rabbitmq_queue_limits"]}
    role = limits[DEFAULT_QUEUE_CAP.queue]
    from_role = QueueCap(
        DEFAULT_QUEUE_CAP.queue,
        int(role["max_length"]),
        int(role["max_length_bytes"]),
        int(defaults["rabbitmq_queue_limit_priority"]),
    )
    assert from_role == DEFAULT_QUEUE_CAP
    assert DEFAULT_QUEUE_CAP.definition() == {
        "max-length": 100_000,
        "max-length-bytes": 268_435_456,
        "overflow": "reject-publish",
    }
    assert DEFAULT_QUEUE_CAP.describe() == "100000 messages or 256 MiB, reject-publish"


def test_the_quotas_are_the_apps_defaults() -> None:
    settings = Settings(env="test")
    quotas = deployed_quotas()
    assert (quotas.rate, quotas.burst, quotas.in_flight_cost) == (
        settings.quota_submit_rate,
        settings.quota_submit_burst,
        settings.quota_in_flight_cost,
    )


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://u:p@127.0.0.1:5672/queuesvc_bench", "queuesvc_bench"),
        ("amqp://u:p@127.0.0.1:5672/%2F", "/"),
        ("amqp://u:p@127.0.0.1:5672", "/"),
    ],
)
def test_vhost_of(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost


LISTING = "name\tpolicy\nimports\t\ndefault\tqueuesvc-bench-limit-default\ndead\t\n"


def test_policy_of_a_listing() -> None:
    assert policy_of(LISTING, "default") == "queuesvc-bench-limit-default"
    assert policy_of(LISTING, "imports") == ""
    assert policy_of(LISTING, "name") is None  # the header is no queue
    assert policy_of(LISTING, "missing") is None


def test_cap_in_force() -> None:
    assert cap_in_force(None, DEFAULT_QUEUE_CAP, LISTING) == (
        "100000 messages or 256 MiB, reject-publish as the rabbitmq role sets it "
        "(policy queuesvc-bench-limit-default in force)"
    )
    assert cap_in_force(None, DEFAULT_QUEUE_CAP, "name\tpolicy\ndefault\t\n").endswith(
        "(NOT seen on the queue)"
    )
    assert cap_in_force("rabbitmqctl failed: denied", DEFAULT_QUEUE_CAP, "") == (
        "none, measured without it (rabbitmqctl failed: denied)"
    )


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(n) for n in range(100, 0, -1)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_flood_lines() -> None:
    run = WrkRun(204.9, 289.5, 3140.0, 2049, 10.0, 1849, SocketErrors(), {202: 200, 429: 1849})
    lines = flood_lines(run, "bench-flood-1", ARGS, deployed_quotas())
    assert lines == [
        "flood key (owner bench-flood-1): wrk -c64 -d10s, iterations 1000 a task: 2049 answers "
        "(205/s): 202: 200, 429: 1849, 503: 0, other: -; p50 289.5 ms, p99 3140.0 ms",
        "  what its quotas let through: 300 by rate (100 + 20/s x 10 s), 200 by in-flight cost "
        "(200000 / 1000)",
    ]
    run = WrkRun(10, 1, 2, 4, 1.0, 3, SocketErrors(), {202: 1, 503: 1, 500: 2})
    (first, _) = flood_lines(run, "o", ARGS, deployed_quotas())
    assert "202: 1, 429: 0, 503: 1, other: 500:2;" in first


def test_calm_lines() -> None:
    answers = [Answer(202, 0.010 * n) for n in range(1, 48)] + [
        Answer(429, 0.5),
        Answer(None, 10.0),
        Answer(503, 0.001),
    ]
    (line,) = calm_lines(answers, "bench-calm-1", ARGS)
    assert line == (
        "calm key (owner bench-calm-1): 5/s for 10 s, iterations 10: accepted 47 of 50 sent "
        "(94%); p50 240.0 ms, p99 500.0 ms (of 49 answers); not accepted: 429:1 503:1 "
        "no answer:1"
    )
    (nothing,) = calm_lines([], "o", ARGS)
    assert nothing.endswith("accepted 0 of 0 sent (-); no answers; not accepted: -")


def test_depth_lines() -> None:
    lines = depth_lines([0, 8, 85, 248, 240], "default", "the cap")
    assert lines[0] == "depth of queue 'default' each second: 0 8 85 248 240; max 248"
    assert lines[1] == "  cap: the cap"
    assert lines[2].startswith("workers: none")
    assert depth_lines([], "default", "c")[0].endswith("each second: -; max 0")


class _Counting(BaseHTTPRequestHandler):
    """202 to every POST, after a pause longer than the client's interval."""

    protocol_version = "HTTP/1.1"
    pause_s = 0.15

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.pause_s)
        self.send_response(202 if self.headers["Authorization"] == "Bearer k" else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def slow_server() -> Iterator[str]:
    with serving(_Counting) as url:
        yield url


def test_paced_posts_keep_the_pace_when_answers_are_slow(slow_server: str) -> None:
    """Answers slower than the interval delay no request: 20/s for 0.5 s is
    10 requests in about 0.5 s plus one answer's time, not 10 answers' time."""
    started = time.monotonic()
    answers = paced_posts(
        slow_server, headers={"Authorization": "Bearer k"}, body={"x": 1}, rate=20, duration=0.5
    )
    took = time.monotonic() - started
    assert [a.status for a in answers] == [202] * 10
    assert all(a.seconds >= _Counting.pause_s for a in answers)
    assert took < 10 * _Counting.pause_s
