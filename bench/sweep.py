"""The concurrency sweep's figures: one row per target and connection count
(medians of the runs' rates and latencies, the runs' errors summed), the table
and the lines against the service's targets."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.wrkparse import Answers, SocketErrors, WrkRun, answers, by_status

# Issue 16: GET /health/live's goodput at 10,000 connections >= 90% of its
# goodput at 64 connections.
HEALTH_TARGET = "GET /health/live"
SUBMIT_TARGET = "POST /api/async/process"
TARGET_CONNECTIONS = 10_000
TARGET_SHARE = 0.9


@dataclass(frozen=True)
class SweepRow:
    target: str
    connections: int
    runs: int
    offered: float  # median of wrk's Requests/sec
    goodput: float  # median of 2xx answers per second
    # Medians of the runs that got answers; None when none did.
    p50_ms: float | None
    p99_ms: float | None
    socket: SocketErrors  # summed over the runs
    answers: Answers  # summed over the runs


def sweep_row(target: str, connections: int, runs: Sequence[WrkRun]) -> SweepRow:
    if not runs:
        raise ValueError("no runs")
    statuses: Counter[int] = Counter()
    socket = SocketErrors()
    for run in runs:
        if run.statuses is None:
            raise ValueError("no per-status counts: run wrk with bench/count_status.lua")
        statuses.update(run.statuses)
        socket += run.socket
    answered = [r for r in runs if r.requests]
    return SweepRow(
        target=target,
        connections=connections,
        runs=len(runs),
        offered=statistics.median(r.rps for r in runs),
        goodput=statistics.median(r.goodput for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in answered) if answered else None,
        p99_ms=statistics.median(r.p99_ms for r in answered) if answered else None,
        socket=socket,
        answers=answers(statuses),
    )


def reference(rows: Sequence[SweepRow], target: str) -> SweepRow:
    """The target's row that the others are compared with: 64 connections if
    swept, else the fewest."""
    own = [r for r in rows if r.target == target]
    return next((r for r in own if r.connections == 64), min(own, key=lambda r: r.connections))


def share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(rows: Sequence[SweepRow]) -> str:
    """One line per row; rates and latencies are medians, errors the runs' totals."""
    refs = {r.target: reference(rows, r.target) for r in rows}
    ref_counts = {r.connections for r in refs.values()}
    vs = f"vs {ref_counts.pop()}c" if len(ref_counts) == 1 else "vs min c"
    header = (
        f"{'target':24} {'conns':>6} {'offered/s':>10} {'goodput/s':>10} {vs:>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} | {'connect':>7} {'read':>7} {'write':>6} "
        f"{'timeout':>7} | {'429':>6} {'503':>6}  {'other 5xx':14} other"
    )
    socket_at, answers_at = (i for i, c in enumerate(header) if c == "|")
    groups = (
        f"{'':{socket_at}}| {'socket errors (wrk)':{answers_at - socket_at - 2}}| non-2xx answers"
    )
    lines = [groups, header]
    for r in rows:
        s, a = r.socket, r.answers
        lines.append(
            f"{r.target:24} {r.connections:6d} {r.offered:10.0f} {r.goodput:10.0f} "
            f"{share(r.goodput, refs[r.target].goodput):>8} {ms(r.p50_ms):>8} "
            f"{ms(r.p99_ms):>8} | {s.connect:7d} {s.read:7d} {s.write:6d} {s.timeout:7d} | "
            f"{a.too_many:6d} {a.unavailable:6d}  {by_status(a.other_5xx):14} {by_status(a.other)}"
        )
    return "\n".join(line.rstrip() for line in lines)


def verdicts(rows: Sequence[SweepRow]) -> list[str]:
    """Per target: the goodput at the most connections against the reference
    (for GET /health/live with its target when 10,000 was swept); for
    the submit, its peak goodput and the share of it left at the most connections."""
    lines = []
    for target in dict.fromkeys(r.target for r in rows):
        own = [r for r in rows if r.target == target]
        ref, top = reference(rows, target), max(own, key=lambda r: r.connections)
        line = (
            f"{target}: goodput at {top.connections} connections {top.goodput:.0f}/s, "
            f"{share(top.goodput, ref.goodput)} of {ref.goodput:.0f}/s at {ref.connections}"
        )
        if target == HEALTH_TARGET:
            at_target = next((r for r in own if r.connections == TARGET_CONNECTIONS), None)
            if at_target and ref.connections == 64 and ref.goodput:
                met = at_target.goodput >= TARGET_SHARE * ref.goodput
                line += (
                    f" (target: >= {TARGET_SHARE:.0%} at {TARGET_CONNECTIONS}: "
                    f"{'met' if met else 'NOT met'})"
                )
            else:
                line += (
                    f" (the target, >= {TARGET_SHARE:.0%} of 64 connections' goodput, "
                    f"is for {TARGET_CONNECTIONS} connections)"
                )
        lines.append(line)
        if target == SUBMIT_TARGET:
            peak = max(own, key=lambda r: r.goodput)
            lines.append(
                f"{target}: peak goodput {peak.goodput:.0f}/s at {peak.connections} connections; "
                f"at {top.connections}: {share(top.goodput, peak.goodput)} of the peak"
            )
    return lines
