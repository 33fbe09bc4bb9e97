"""A target's figures over the rounds (medians), and the submit path's goals as
ratio lines and verdicts: locally against the hello-world and the peer
(bench/peer.py), through a load balancer against GET /health/live."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.wrkparse import WrkRun

# Local goals: the submit beats the tutorial pattern on rate and tail, and
# costs little next to a bare app under the same server; liveness is nearly free.
SUBMIT_OVER_PEER_RPS = 1.5
SUBMIT_SHARE_OF_HELLO = 0.30
HEALTH_SHARE_OF_HELLO = 0.90
# Through the load balancer, TLS and nginx are in both figures.
DEPLOYED_SUBMIT_SHARE_OF_HEALTH = 0.25


@dataclass(frozen=True)
class Figures:
    """Medians over the runs of one target; non-2xx summed."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def figures(runs: Sequence[WrkRun]) -> Figures:
    if not runs:
        raise ValueError("no runs")
    return Figures(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.non_2xx for r in runs),
    )


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else float("inf")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def caveat(*targets: tuple[str, Figures]) -> str:
    """Requests/sec counts every answer: say so when some were errors."""
    errors = [f"{name} {fig.non_2xx}" for name, fig in targets if fig.non_2xx]
    return f" (non-2xx answers in these rates: {', '.join(errors)})" if errors else ""


def local_lines(hello: Figures, health: Figures, submit: Figures, peer: Figures) -> list[str]:
    """Ratios and verdicts of a local run: ours against the peer and the hello-world."""
    over_peer = ratio(submit.rps, peer.rps)
    p99_over_peer = ratio(submit.p99_ms, peer.p99_ms)
    submit_share = ratio(submit.rps, hello.rps)
    health_share = ratio(health.rps, hello.rps)
    beats_peer = over_peer >= SUBMIT_OVER_PEER_RPS and submit.p99_ms <= peer.p99_ms
    return [
        f"ours/peer, POST /api/async/process: req/s {over_peer:.2f}x "
        f"({submit.rps:.0f} vs {peer.rps:.0f}), p99 {p99_over_peer:.2f}x "
        f"({submit.p99_ms:.1f} vs {peer.p99_ms:.1f} ms)",
        f"ours/hello, submit req/s: {submit_share:.0%}",
        f"health/hello, GET /health/live req/s: {health_share:.0%}",
        f"target: submit >= {SUBMIT_OVER_PEER_RPS:g}x the peer's req/s with p99 <= the peer's: "
        f"{verdict(beats_peer)} ({over_peer:.2f}x, p99 {submit.p99_ms:.1f} vs "
        f"{peer.p99_ms:.1f} ms){caveat(('submit', submit), ('peer', peer))}",
        f"target: submit >= {SUBMIT_SHARE_OF_HELLO:.0%} of hello-world req/s: "
        f"{verdict(submit_share >= SUBMIT_SHARE_OF_HELLO)} ({submit_share:.0%})"
        f"{caveat(('submit', submit), ('hello', hello))}",
        f"target: GET /health/live >= {HEALTH_SHARE_OF_HELLO:.0%} of hello-world req/s: "
        f"{verdict(health_share >= HEALTH_SHARE_OF_HELLO)} ({health_share:.0%})"
        f"{caveat(('health', health), ('hello', hello))}",
    ]


def deployed_lines(health: Figures, submit: Figures) -> list[str]:
    """Ratio and verdict through the load balancer; the peer runs only locally."""
    share = ratio(submit.rps, health.rps)
    return [
        f"submit/health through the load balancer, req/s: {share:.0%} "
        f"({submit.rps:.0f} vs {health.rps:.0f})",
        f"target through lb1: submit >= {DEPLOYED_SUBMIT_SHARE_OF_HEALTH:.0%} of "
        f"GET /health/live req/s: {verdict(share >= DEPLOYED_SUBMIT_SHARE_OF_HEALTH)} "
        f"({share:.0%}){caveat(('submit', submit), ('health', health))}",
        "the peer (bench/peer.py) is not deployed on lb1: the ours/peer comparison is local only",
    ]
