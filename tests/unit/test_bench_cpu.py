"""The benchmark's CPU accounting from /proc: stat lines, process trees, the
ticks a group used between two snapshots, and the bound it names."""

from __future__ import annotations

import os

import pytest

from bench.cpu import (
    Group,
    HostCpu,
    ProcStat,
    Sampler,
    Usage,
    busiest,
    descendants,
    group_ticks,
    named,
    only,
    parse_host_cpu,
    parse_stat,
    percent_of_core,
    tree,
)

# proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
# cmajflt utime stime cutime cstime ...
STAT = "4242 (celery: Worker (1)) S 4200 4200 4200 0 -1 4194560 10 0 0 0 150 30 7 3 20 0 1 0"


def stat(pid: int, ppid: int, ticks: int, comm: str = "python") -> ProcStat:
    return ProcStat(pid, comm, ppid, ticks)


def test_parse_stat() -> None:
    """A name with blanks and parentheses; children's cutime/cstime not counted."""
    assert parse_stat(STAT) == ProcStat(4242, "celery: Worker (1)", 4200, 180)


def test_parse_host_cpu() -> None:
    text = "cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 50 2 25 400 20 0 0 0 0 0\n"
    assert parse_host_cpu(text) == HostCpu(busy=155, iowait=45, total=1000)
    assert HostCpu(200, 50, 1200) - HostCpu(155, 45, 1000) == HostCpu(45, 5, 200)
    with pytest.raises(ValueError, match="no cpu line"):
        parse_host_cpu("intr 1\n")


def test_trees_and_names() -> None:
    stats = {
        1: stat(1, 0, 0, "init"),
        10: stat(10, 1, 5, "gunicorn"),
        11: stat(11, 10, 5, "gunicorn"),
        12: stat(12, 10, 5, "gunicorn"),
        13: stat(13, 12, 5, "sh"),
        20: stat(20, 1, 5, "redis-server"),
    }
    assert descendants(10, stats) == {10, 11, 12, 13}
    assert descendants(99, stats) == set()
    assert named("redis-server", stats) == {20}
    assert tree(12)(stats) == {12, 13}
    assert only(20)(stats) == {20}
    assert only(99)(stats) == set()


def test_group_ticks() -> None:
    before = {1: stat(1, 0, 100), 2: stat(2, 1, 50), 3: stat(3, 1, 10)}
    # 2 ended in between (lost), 4 started in between (from zero).
    after = {1: stat(1, 0, 130), 4: stat(4, 1, 7), 3: stat(3, 1, 10)}
    assert group_ticks({1, 2, 3, 4}, before, after) == 30 + 7


def test_percent_of_core() -> None:
    assert percent_of_core(100, 2.0, 100) == 50.0
    assert percent_of_core(400, 2.0, 100) == 200.0  # two cores busy
    assert percent_of_core(5, 0.0, 100) == 0.0


def usage(percent: dict[str, float], limit: dict[str, float], host: float) -> Usage:
    return Usage(seconds=5.0, percent=percent, limit=limit, host_percent=host, cores=2)


def test_the_busiest_is_the_bound() -> None:
    assert busiest({"a": 10.0, "b": 60.0, "c": 59.9}) == "b"
    with pytest.raises(ValueError, match="no processes"):
        busiest({})
    saturated = usage({"worker": 190.0, "mongo": 40.0}, {"worker": 200.0, "mongo": 100.0}, 120.0)
    assert saturated.bound == "worker"
    assert saturated.verdict() == (
        "bound: worker, the busiest (190% of one core, 95% of the 200% it can use)"
    )


def test_verdict_when_none_is_near_its_limit() -> None:
    waiting = usage({"worker": 60.0, "mongo": 50.0}, {"worker": 200.0, "mongo": 100.0}, 120.0)
    assert waiting.bound == "worker"
    assert "none is near its CPU limit (the nearest, mongo, at 50%)" in waiting.verdict()


def test_verdict_when_the_host_is_busy() -> None:
    busy = usage({"worker": 60.0, "mongo": 50.0}, {"worker": 200.0, "mongo": 100.0}, 190.0)
    assert "the host's cores are 95% busy" in busy.verdict()


def test_sampler_on_this_process() -> None:
    sampler = Sampler({"me": Group(only(os.getpid()), 1), "nobody": Group(lambda _: set(), 1)})
    sampler.start()
    sum(range(200_000))
    result = sampler.stop()
    assert set(result.percent) == {"me"}
    assert result.limit == {"me": 100.0}
    assert result.cores == (os.cpu_count() or 1)
    assert result.percent["me"] >= 0.0
