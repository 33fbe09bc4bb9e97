"""wrk's output as figures: one run's requests/s, latencies and errors, and the
answers per HTTP status that bench/count_status.lua prints, sorted by kind."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# wrk prints times with these units (format_time_us: us, ms, s, then m, h).
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


@dataclass(frozen=True)
class SocketErrors:
    """wrk's "Socket errors:" line (absent when all four are zero)."""

    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    def __add__(self, other: SocketErrors) -> SocketErrors:
        return SocketErrors(
            self.connect + other.connect,
            self.read + other.read,
            self.write + other.write,
            self.timeout + other.timeout,
        )


@dataclass(frozen=True)
class WrkRun:
    """One wrk run. rps is wrk's Requests/sec: every complete answer, whatever
    its status, per second (the offered rate that got an answer)."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float
    # wrk's "Non-2xx or 3xx responses" (in fact: status >= 400); 0 when absent.
    non_2xx: int
    socket: SocketErrors
    # Answers per status, from count_status.lua's "statuses:" line; None without it.
    statuses: dict[int, int] | None = None

    @property
    def goodput(self) -> float:
        """2xx answers per second (needs the statuses line): Requests/sec times
        the 2xx share of the answers, so never above rps (the "N requests in
        T" line's T is rounded to 10 ms)."""
        if self.statuses is None:
            raise ValueError("no per-status counts: run wrk with bench/count_status.lua")
        answered = sum(self.statuses.values())
        return self.rps * answers(self.statuses).ok / answered if answered else 0.0


def to_ms(value: str, unit: str) -> float:
    return float(value) * UNITS_MS[unit]


def parse_wrk(output: str) -> WrkRun:
    """The figures of one `wrk --latency` run's standard output."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+{_TIME}\s*$", output, re.M)
        if not match:
            raise ValueError(f"no {percent}% latency in wrk output:\n{output}")
        return to_ms(match.group(1), match.group(2))

    rps = re.search(r"^Requests/sec:\s+([\d.]+)\s*$", output, re.M)
    if not rps:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    total = re.search(rf"^\s+(\d+) requests in {_TIME},", output, re.M)
    if not total:
        raise ValueError(f"no 'N requests in T' line in wrk output:\n{output}")
    non_2xx = re.search(r"^\s+Non-2xx or 3xx responses:\s+(\d+)\s*$", output, re.M)
    socket = re.search(
        r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$",
        output,
        re.M,
    )
    return WrkRun(
        rps=float(rps.group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(total.group(1)),
        seconds=to_ms(total.group(2), total.group(3)) / 1e3,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket=SocketErrors(*(int(n) for n in socket.groups())) if socket else SocketErrors(),
        statuses=parse_statuses(output),
    )


def parse_statuses(output: str) -> dict[int, int] | None:
    """count_status.lua's "statuses: 200=123 502=4" line ("statuses:" alone when
    nothing answered); None when the output has no such line."""
    match = re.search(r"^statuses:(.*)$", output, re.M)
    if not match:
        return None
    counts: dict[int, int] = {}
    for part in match.group(1).split():
        status, _, count = part.partition("=")
        if not (status.isdigit() and count.isdigit()):
            raise ValueError(f"bad status count {part!r} in: {match.group(0)}")
        counts[int(status)] = counts.get(int(status), 0) + int(count)
    return counts


@dataclass(frozen=True)
class Answers:
    """HTTP answers by kind: 2xx (good), 429 (rate limited), 503 (unavailable),
    the other 5xx by status, everything else (1xx, 3xx, 4xx but 429) by status."""

    ok: int = 0
    too_many: int = 0
    unavailable: int = 0
    other_5xx: dict[int, int] = field(default_factory=dict)
    other: dict[int, int] = field(default_factory=dict)


def answers(statuses: Mapping[int, int]) -> Answers:
    ok = too_many = unavailable = 0
    other_5xx: dict[int, int] = {}
    other: dict[int, int] = {}
    for status, count in sorted(statuses.items()):
        if 200 <= status < 300:
            ok += count
        elif status == 429:
            too_many += count
        elif status == 503:
            unavailable += count
        elif 500 <= status < 600:
            other_5xx[status] = count
        else:
            other[status] = count
    return Answers(ok, too_many, unavailable, other_5xx, other)


def by_status(counts: Mapping[int, int]) -> str:
    """ "502:17 504:3", or "-" when there are none."""
    return " ".join(f"{status}:{n}" for status, n in sorted(counts.items()) if n) or "-"
