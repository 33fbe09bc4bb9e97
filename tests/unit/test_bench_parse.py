"""The benchmark's reading of wrk: figures from wrk's output, the answers per
status that bench/count_status.lua reports sorted by kind, the sweep's rows,
table and verdicts. The samples in wrk_samples/ are real wrk output: lb1-* through
the lab's load balancer (2 December 2026, nginx with 1024 worker_connections),
local-* from small servers on loopback."""

from __future__ import annotations

import itertools
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from bench.run import allow_open_files, connection_counts
from bench.sweep import sweep_row, table, verdicts
from bench.wrkparse import Answers, SocketErrors, answers, by_status, parse_statuses, parse_wrk
from tests.unit.loopback_http import serving

REPO = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).with_name("wrk_samples")


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text()


def test_plain_run_without_status_counts() -> None:
    run = parse_wrk(sample("lb1-nginx-live-64-plain"))
    assert run.rps == 68561.42
    assert run.p50_ms == pytest.approx(0.469)  # 469.00us
    assert run.p99_ms == pytest.approx(29.63)
    assert (run.requests, run.seconds) == (137425, 2.0)
    assert run.non_2xx == 0
    assert run.socket == SocketErrors()
    assert run.statuses is None
    with pytest.raises(ValueError, match=r"count_status\.lua"):
        _ = run.goodput


def test_all_good() -> None:
    run = parse_wrk(sample("lb1-health-64"))
    assert (run.rps, run.p50_ms, run.p99_ms) == (8519.93, 6.83, 29.27)
    assert run.statuses == {200: 25710}
    assert run.goodput == run.rps
    assert run.socket == SocketErrors()


def test_socket_errors_and_a_500() -> None:
    run = parse_wrk(sample("lb1-health-1000"))
    assert run.socket == SocketErrors(connect=4, read=514, write=0, timeout=0)
    assert run.non_2xx == 42
    assert run.statuses == {200: 10723, 500: 42}
    assert answers(run.statuses) == Answers(ok=10723, other_5xx={500: 42})
    assert run.goodput == pytest.approx(2651.57 * 10723 / 10765)
    assert run.rps > run.goodput
    assert run.p99_ms == pytest.approx(881.57)


def test_nothing_answered() -> None:
    """Every connection refused or reset: zero latencies, an empty statuses line."""
    run = parse_wrk(sample("lb1-health-10000"))
    assert (run.rps, run.requests, run.p50_ms, run.p99_ms) == (0.0, 0, 0.0, 0.0)
    assert run.seconds == pytest.approx(5.3)
    assert run.socket == SocketErrors(connect=68492)
    assert run.statuses == {}
    assert run.goodput == 0.0


def test_submit_202_is_good() -> None:
    run = parse_wrk(sample("lb1-submit-64"))
    assert run.statuses == {202: 1351}
    assert run.goodput == run.rps
    assert run.p99_ms == pytest.approx(541.22)


def test_latencies_in_seconds() -> None:
    run = parse_wrk(sample("local-seconds-504"))  # "1.20s " with a trailing blank
    assert (run.p50_ms, run.p99_ms) == (1200.0, 1200.0)
    assert run.goodput == 0.0
    assert answers(run.statuses or {}) == Answers(other_5xx={504: 8})


def test_timeouts() -> None:
    """Answers later than --timeout count as timeouts, and as answers, but
    their latencies are not recorded."""
    run = parse_wrk(sample("local-timeouts-504"))
    assert run.socket == SocketErrors(timeout=8)
    assert run.statuses == {504: 8}
    assert run.p99_ms == 0.0


@pytest.mark.parametrize("name", sorted(p.stem for p in SAMPLES.glob("*.txt")))
def test_lua_counts_agree_with_wrk(name: str) -> None:
    """Every answer is counted once by status, and wrk's own non-2xx count
    (status >= 400) is the counted answers from 400 up."""
    run = parse_wrk(sample(name))
    if run.statuses is None:
        return
    assert sum(run.statuses.values()) == run.requests
    assert sum(n for status, n in run.statuses.items() if status >= 400) == run.non_2xx


def test_answers_by_kind() -> None:
    statuses = {200: 5, 201: 1, 204: 1, 301: 2, 404: 3, 429: 4, 500: 1, 502: 7, 503: 8, 504: 2}
    assert answers(statuses) == Answers(
        ok=7, too_many=4, unavailable=8, other_5xx={500: 1, 502: 7, 504: 2}, other={301: 2, 404: 3}
    )
    assert by_status(answers(statuses).other_5xx) == "500:1 502:7 504:2"
    assert by_status({}) == "-"
    assert answers({}) == Answers()


def test_statuses_line() -> None:
    assert parse_statuses("statuses: 200=3 502=1\n") == {200: 3, 502: 1}
    assert parse_statuses("Requests/sec: 1.00\nstatuses: \n") == {}
    assert parse_statuses("Requests/sec: 1.00\n") is None
    with pytest.raises(ValueError, match="bad status count"):
        parse_statuses("statuses: 200=3 oops\n")


def test_missing_figures_are_errors() -> None:
    output = sample("lb1-health-64")
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk(output.replace("Requests/sec", "Requests per second"))
    with pytest.raises(ValueError, match="99% latency"):
        parse_wrk(output.replace("99%", "98%"))


def test_sweep_rows_table_and_verdicts() -> None:
    health = {c: parse_wrk(sample(f"lb1-health-{c}")) for c in (64, 1000, 10000)}
    submit = {c: parse_wrk(sample(f"lb1-submit-{c}")) for c in (64, 5000)}
    rows = [sweep_row("GET /health/live", c, [run]) for c, run in health.items()]
    rows += [sweep_row("POST /api/async/process", c, [run]) for c, run in submit.items()]

    # Medians over runs, error counts summed.
    twice = sweep_row("GET /health/live", 1000, [health[1000], health[64]])
    assert twice.goodput == pytest.approx((health[1000].goodput + health[64].goodput) / 2)
    assert twice.socket == SocketErrors(connect=4, read=514)
    assert twice.answers == Answers(ok=10723 + 25710, other_5xx={500: 42})

    groups, header, *lines = table(rows).splitlines()
    assert groups.index("| socket errors") == header.index("| connect")
    assert groups.index("| non-2xx answers") == header.index("|    429")
    assert "vs 64c" in header
    assert len(lines) == len(rows)
    assert lines[0].split()[:8] == [
        "GET",
        "/health/live",
        "64",
        "8520",
        "8520",
        "100%",
        "6.8",
        "29.3",
    ]
    assert lines[1].split()[-2:] == ["500:42", "-"]
    # Nothing answered at 10000: no latencies, the connect errors.
    assert lines[2].split()[2:10] == ["10000", "0", "0", "0%", "-", "-", "|", "68492"]

    said = verdicts(rows)
    assert said[0].startswith("GET /health/live: goodput at 10000 connections 0/s, 0% of 8520/s")
    assert said[0].endswith("(target: >= 90% at 10000: NOT met)")
    assert said[-1] == (
        "POST /api/async/process: peak goodput 447/s at 64 connections; at 5000: 0% of the peak"
    )


def test_sweep_without_64_compares_with_the_fewest() -> None:
    rows = [
        sweep_row("GET /health/live", c, [parse_wrk(sample(f"lb1-health-{c}"))])
        for c in (1000, 10000)
    ]
    assert "vs 1000c" in table(rows).splitlines()[1]
    assert "is for 10000 connections" in verdicts(rows)[0]


def test_connection_counts() -> None:
    assert connection_counts("10000,64, 5000,64") == [64, 5000, 10000]
    for bad in ("", "64,x", "0,64"):
        with pytest.raises(Exception, match="connection counts"):
            connection_counts(bad)


def test_too_few_open_files_is_a_clear_failure() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files")
    with pytest.raises(SystemExit, match=r"hard limit \(RLIMIT_NOFILE"):
        allow_open_files(hard)


class _Cycling(BaseHTTPRequestHandler):
    """Answers GET with 405, POST with the next status of a cycle when it
    carries bench/post_process.lua's JSON body, else with 400."""

    protocol_version = "HTTP/1.1"
    statuses = itertools.cycle([200, 202, 429, 503, 502, 404])

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.answer(405)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        json = self.headers["Content-Type"] == "application/json"
        self.answer(next(self.statuses) if json and b'"iterations"' in body else 400)


@pytest.fixture
def cycling_server() -> Iterator[str]:
    with serving(_Cycling) as url:
        yield url


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_count_script_composes_the_submit(cycling_server: str) -> None:
    """A real wrk run (1 s, 2 connections, loopback): count_status.lua runs
    post_process.lua first (POST with its body) and counts every answer."""
    done = subprocess.run(
        ["wrk", "-t2", "-c2", "-d1s", "--latency", "-s", "bench/count_status.lua", cycling_server],
        cwd=REPO,
        env={**os.environ, "WRK_BASE_SCRIPT": str(REPO / "bench/post_process.lua")},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    run = parse_wrk(done.stdout)
    assert run.statuses
    assert set(run.statuses) <= {200, 202, 429, 503, 502, 404}
    assert sum(run.statuses.values()) == run.requests
    kinds = answers(run.statuses)
    assert run.goodput == pytest.approx(run.rps * kinds.ok / run.requests)
