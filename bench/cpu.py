"""CPU time of processes from /proc over a stretch of time, to name what bounds a rate.

A process's CPU time is its utime + stime (/proc/<pid>/stat, in clock ticks);
a group is a process with its descendants (a Celery worker and its prefork
pool, gunicorn and its workers) or every process of one name (redis-server,
beam.smp). Live children are counted by walking the tree: cutime/cstime only
cover children that exited and were waited for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    ppid: int
    ticks: int  # utime + stime


def parse_stat(text: str) -> ProcStat:
    """One /proc/<pid>/stat line. The command name sits in parentheses and may
    hold spaces and parentheses itself: the fields resume after the last ')'."""
    open_at, close_at = text.index("("), text.rindex(")")
    fields = text[close_at + 2 :].split()
    # fields[0] is field 3 of proc(5): state; ppid is 4, utime 14, stime 15.
    return ProcStat(
        pid=int(text[:open_at]),
        comm=text[open_at + 1 : close_at],
        ppid=int(fields[1]),
        ticks=int(fields[11]) + int(fields[12]),
    )


@dataclass(frozen=True)
class HostCpu:
    """Ticks of all cores: busy, waiting for I/O (idle with I/O pending), all."""

    busy: int
    iowait: int
    total: int

    def __sub__(self, other: HostCpu) -> HostCpu:
        return HostCpu(self.busy - other.busy, self.iowait - other.iowait, self.total - other.total)


def parse_host_cpu(text: str) -> HostCpu:
    """/proc/stat's "cpu" line (user nice system idle iowait irq softirq steal);
    guest time is already inside user and nice."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:9]]
            total = sum(values)
            return HostCpu(total - values[3] - values[4], values[4], total)
    raise ValueError("no cpu line in /proc/stat")


def descendants(root: int, stats: Mapping[int, ProcStat]) -> set[int]:
    """`root` and every process below it (of those in `stats`)."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def named(comm: str, stats: Mapping[int, ProcStat]) -> set[int]:
    return {pid for pid, stat in stats.items() if stat.comm == comm}


def percent_of_core(ticks: int, seconds: float, clock_ticks: int) -> float:
    """CPU time over wall time, in % of one core (a group on two cores can reach 200)."""
    return 100.0 * ticks / clock_ticks / seconds if seconds > 0 else 0.0


def group_ticks(
    pids: Iterable[int], before: Mapping[int, ProcStat], after: Mapping[int, ProcStat]
) -> int:
    """Ticks the processes used between two snapshots. One that started in
    between counts from zero; one that ended in between is lost (a bound, not a sum)."""
    used = 0
    for pid in pids:
        if pid in after:
            start = before[pid].ticks if pid in before else 0
            used += max(0, after[pid].ticks - start)
    return used


def busiest(shares: Mapping[str, float]) -> str:
    if not shares:
        raise ValueError("no processes sampled")
    return max(shares, key=lambda name: shares[name])


def snapshot() -> dict[int, ProcStat]:
    stats = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            # A process may end between the listing and the read.
            with suppress(OSError, ValueError, IndexError):
                stat = parse_stat((entry / "stat").read_text())
                stats[stat.pid] = stat
    return stats


# Which pids a group has in a snapshot.
Selector = Callable[[Mapping[int, ProcStat]], set[int]]


def tree(root: int) -> Selector:
    return lambda stats: descendants(root, stats)


def by_name(comm: str) -> Selector:
    return lambda stats: named(comm, stats)


def only(pid: int) -> Selector:
    return lambda stats: {pid} & stats.keys()


@dataclass(frozen=True)
class Group:
    select: Selector
    cores: int  # the most it can use: 1 for a single-threaded or GIL-bound process


# Above this share of what it can use, a group is near its CPU limit.
SATURATED = 0.75


@dataclass(frozen=True)
class Usage:
    seconds: float
    percent: dict[str, float]  # group -> % of one core; groups with no process left out
    limit: dict[str, float]  # group -> the most it can use, in % of one core
    host_percent: float  # every core busy = 100 x cores
    cores: int
    iowait_percent: float = 0.0  # the cores' time idle with disk I/O pending, same scale

    @property
    def bound(self) -> str:
        return busiest(self.percent)

    def verdict(self) -> str:
        """The busiest group named as the bound, with how near its own limit it is
        and whether the machine or waiting between the processes is the likelier bound."""
        name = self.bound
        used, limit = self.percent[name], self.limit[name]
        line = (
            f"bound: {name}, the busiest ({used:.0f}% of one core, "
            f"{used / limit:.0%} of the {limit:.0f}% it can use)"
        )
        if self.host_percent >= SATURATED * 100 * self.cores:
            return line + (
                f"; but the host's cores are {self.host_percent / self.cores:.0f}% busy: "
                "the machine itself is near its limit"
            )
        nearest = max(self.percent, key=lambda n: self.percent[n] / self.limit[n])
        if self.percent[nearest] / self.limit[nearest] < SATURATED:
            return line + (
                f"; none is near its CPU limit (the nearest, {nearest}, at "
                f"{self.percent[nearest] / self.limit[nearest]:.0%}): the tasks wait on round "
                "trips between the processes more than on any one's CPU"
            )
        return line


class Sampler:
    """CPU use of process groups between start() and stop()."""

    def __init__(self, groups: Mapping[str, Group]) -> None:
        self._groups = dict(groups)
        self._clock_ticks = os.sysconf("SC_CLK_TCK")
        self._cores = os.cpu_count() or 1

    def start(self) -> None:
        self._host = parse_host_cpu((PROC / "stat").read_text())
        self._before = snapshot()
        self._started = time.monotonic()

    def stop(self) -> Usage:
        seconds = time.monotonic() - self._started
        after = snapshot()
        host = parse_host_cpu((PROC / "stat").read_text()) - self._host
        percent, limit = {}, {}
        for name, group in self._groups.items():
            pids = group.select(after) | group.select(self._before)
            if pids:
                used = group_ticks(pids, self._before, after)
                percent[name] = percent_of_core(used, seconds, self._clock_ticks)
                limit[name] = 100.0 * min(group.cores, self._cores)
        scale = 100.0 * self._cores / host.total if host.total else 0.0
        return Usage(seconds, percent, limit, host.busy * scale, self._cores, host.iowait * scale)
