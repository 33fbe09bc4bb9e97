"""The benchmark's figures over rounds, its ratio lines and verdicts (local and
through a load balancer), and --url mode end to end on recorded wrk output."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

import bench.run
from bench.targets import Figures, caveat, deployed_lines, figures, local_lines
from bench.wrkparse import SocketErrors, WrkRun, parse_wrk

SAMPLES = Path(__file__).with_name("wrk_samples")


def run(rps: float, p99_ms: float, non_2xx: int = 0) -> WrkRun:
    return WrkRun(rps, p99_ms / 2, p99_ms, int(rps * 5), 5.0, non_2xx, SocketErrors())


def test_figures_are_medians_over_rounds() -> None:
    assert figures([run(100, 9), run(300, 30, 2), run(200, 10, 1)]) == Figures(200, 5, 10, 3)
    with pytest.raises(ValueError, match="no runs"):
        figures([])


HELLO = Figures(10_000, 5, 12, 0)


def test_local_targets_met() -> None:
    lines = local_lines(
        hello=HELLO,
        health=Figures(9_500, 6, 14, 0),
        submit=Figures(3_300, 15, 40, 0),
        peer=Figures(2_000, 30, 90, 0),
    )
    assert lines[0] == (
        "ours/peer, POST /api/async/process: req/s 1.65x (3300 vs 2000), "
        "p99 0.44x (40.0 vs 90.0 ms)"
    )
    assert lines[1] == "ours/hello, submit req/s: 33%"
    assert lines[2] == "health/hello, GET /health/live req/s: 95%"
    assert lines[3].endswith("p99 <= the peer's: met (1.65x, p99 40.0 vs 90.0 ms)")
    assert lines[4] == "target: submit >= 30% of hello-world req/s: met (33%)"
    assert lines[5] == "target: GET /health/live >= 90% of hello-world req/s: met (95%)"


def test_local_targets_not_met() -> None:
    # Faster than the peer but a worse tail: the first target is not met.
    lines = local_lines(
        hello=HELLO,
        health=Figures(7_000, 6, 14, 0),
        submit=Figures(3_300, 15, 95, 4),
        peer=Figures(2_000, 30, 90, 0),
    )
    assert (
        "NOT met (1.65x, p99 95.0 vs 90.0 ms) (non-2xx answers in these rates: submit 4)"
        in (lines[3])
    )
    assert lines[4].startswith("target: submit >= 30% of hello-world req/s: met (33%)")
    assert lines[5].endswith("NOT met (70%)")


def test_caveat() -> None:
    assert caveat(("a", HELLO)) == ""
    assert caveat(("a", Figures(1, 1, 1, 2)), ("b", Figures(1, 1, 1, 3))) == (
        " (non-2xx answers in these rates: a 2, b 3)"
    )


def test_deployed_lines() -> None:
    lines = deployed_lines(health=Figures(8_000, 6, 29, 0), submit=Figures(1_600, 40, 500, 0))
    assert lines[0] == "submit/health through the load balancer, req/s: 20% (1600 vs 8000)"
    assert lines[1] == "target through lb1: submit >= 25% of GET /health/live req/s: NOT met (20%)"
    assert "not deployed on lb1" in lines[2]


def test_url_mode_on_recorded_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--url: rounds over the three targets (every request keyed), the table,
    then the ratio and verdict."""
    recorded = {
        "/nginx/live": "lb1-nginx-live-64-plain",
        "/health/live": "lb1-health-64",
        "/api/async/process": "lb1-submit-64",
    }
    calls: list[str] = []

    def fake_wrk(url: str, *, key: str | None = None, **_: Any) -> WrkRun:
        assert key == "qsk_test"
        path = url.removeprefix("https://lb1.test")
        calls.append(path)
        return parse_wrk((SAMPLES / f"{recorded[path]}.txt").read_text())

    monkeypatch.setattr(bench.run, "wrk", fake_wrk)
    args = argparse.Namespace(
        url="https://lb1.test/",
        baseline_path="/nginx/live",
        threads=1,
        connections=64,
        duration=1,
        runs=2,
    )
    bench.run.measure_deployment(args, "qsk_test")
    # In rounds: every target once per round, in turn, every other round backwards.
    assert calls == [*recorded, *reversed(recorded)]
    out = capsys.readouterr().out
    health, submit = (
        parse_wrk((SAMPLES / "lb1-health-64.txt").read_text()),
        parse_wrk((SAMPLES / "lb1-submit-64.txt").read_text()),
    )
    share = submit.rps / health.rps
    assert f"req/s: {share:.0%}" in out
    verdict = "met" if share >= 0.25 else "NOT met"
    assert f"target through lb1: submit >= 25% of GET /health/live req/s: {verdict}" in out
    assert "the ours/peer comparison is local only" in out
