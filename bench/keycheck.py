"""What the key check adds to a request: the same routes, sent the same keyed
requests in the same rounds, on the service and on bench/unkeyed.py (the
service with a fixed caller in place of the check). Latencies are wrk's
p50 and p99 at the run's connections, medians over the rounds."""

from __future__ import annotations

from collections.abc import Mapping

from bench.targets import Figures, caveat, ratio

HEADING = [
    "key check, same run: the service (keyed) against bench/unkeyed.py (unkeyed: the same app",
    "and settings, a fixed caller in place of the key check; a benchmark baseline, never",
    "deployed); both sent the same keyed requests; medians over the rounds",
]


def key_check_lines(pairs: Mapping[str, tuple[Figures, Figures]]) -> list[str]:
    """One row per route from its (keyed, unkeyed) figures: req/s and their
    ratio, p50 and p99 and the milliseconds the check adds to each."""
    width = max(len(route) for route in pairs)
    lines = [
        *HEADING,
        f"{'route':{width}} | {'req/s keyed':>11} {'unkeyed':>8} {'ratio':>6} | "
        f"{'p50 ms keyed':>12} {'unkeyed':>8} {'added':>7} | "
        f"{'p99 ms keyed':>12} {'unkeyed':>8} {'added':>7}",
    ]
    for route, (keyed, unkeyed) in pairs.items():
        lines.append(
            f"{route:{width}} | {keyed.rps:11.0f} {unkeyed.rps:8.0f} "
            f"{ratio(keyed.rps, unkeyed.rps):5.2f}x | "
            f"{keyed.p50_ms:12.2f} {unkeyed.p50_ms:8.2f} {keyed.p50_ms - unkeyed.p50_ms:+7.2f} | "
            f"{keyed.p99_ms:12.2f} {unkeyed.p99_ms:8.2f} {keyed.p99_ms - unkeyed.p99_ms:+7.2f}"
        )
        errors = caveat(("keyed", keyed), ("unkeyed", unkeyed))
        if errors:
            lines.append(f"  {route}:{errors}")
    return lines
