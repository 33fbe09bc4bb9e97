"""Benchmark the API under gunicorn (2 workers) on loopback, against the real services.

Measures requests/s and p50/p99 latency with wrk at 64 connections for
GET /health/live, GET /api/items/{id} and POST /api/async/process, and, in the
same run, a bare FastAPI hello-world under the same gunicorn settings as the
baseline. Prints each figure and its ratio to the baseline (medians of --runs).

MongoDB here is the mongoeco emulator (see README), so GET /api/items/{id}
mostly measures the emulator: it is also reported as a ratio to raw PyMongo
find_one calls against the same server in the same run.

Usage (as root, after scripts/dev-services.sh and scripts/python-env.sh):
    .venv/bin/python bench/run.py [--duration 10] [--runs 3] [--connections 64]
    .venv/bin/python bench/run.py --url https://192.168.56.10 [--duration 8] [--runs 3]
    .venv/bin/python bench/run.py --url https://192.168.56.10 --sweep 64,1000,5000,10000

With --url, measures a deployed system instead (the lab's load balancer,
say): GET /health/live and POST /api/async/process there, same wrk settings,
against nginx's own liveness answer on the same load balancer as the baseline
(--baseline-path, default /nginx/live: TLS and nginx, no app server).

With --url and --sweep 64,1000,5000,10000, sweeps those connection counts
instead, for GET /health/live and POST /api/async/process, with
wrk -t2 (--threads) --timeout 10s and bench/count_status.lua, which counts the
answers per HTTP status (for the submit it first runs bench/post_process.lua,
named by WRK_BASE_SCRIPT). One row per target and count: offered requests/s
(wrk's Requests/sec: every answer, whatever its status), goodput (2xx answers
per second), p50/p99, wrk's socket errors (connect, read, write, timeout) and
the answers that are not 2xx (429, 503, other 5xx and the rest, by status).
Rates and latencies are medians of the --runs runs (latencies of the runs that
got answers), error counts the runs' totals. Then each target's goodput at the
most connections against its goodput at 64 (the goal: GET /health/live at
10,000 >= 90%), and the submit's peak goodput and the share of it left at the
most connections. Defining response() in the wrk script takes wrk off its fast
path (it reads each answer into Lua): the sweep's rates are a little lower than
those of the plain runs. wrk holds a socket per connection: the soft limit on
open files is raised to the hard one, which must be 100 above the largest count.
CI runs a bounded sweep through lb1: --sweep 64,5000 --duration 10 --runs 1.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sweep import (  # noqa: E402
    HEALTH_TARGET,
    SUBMIT_TARGET,
    SweepRow,
    sweep_row,
    table,
    verdicts,
)
from bench.wrkparse import WrkRun, parse_wrk  # noqa: E402
from tests.integration.services import (  # noqa: E402
    MongoEmulator,
    Process,
    free_port,
    load_dev_env,
    purge_queues,
    wait_http_ok,
)

POST_SCRIPT = REPO / "bench/post_process.lua"
COUNT_SCRIPT = REPO / "bench/count_status.lua"
# The two targets measured on a deployment: path and wrk script (None: GET).
DEPLOYED = {
    HEALTH_TARGET: ("/health/live", None),
    SUBMIT_TARGET: ("/api/async/process", POST_SCRIPT),
}
SWEEP_TIMEOUT_S = 10
# Open files wrk needs besides one per connection (standard streams, epoll, slack).
FD_MARGIN = 100
# Longest wait for earlier runs' TIME_WAIT sockets to free local ports
# (they last 60 s on Linux).
PORT_WAIT_LIMIT_S = 70.0


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    duration: int,
    timeout_s: int = 5,
    script: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> WrkRun:
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--latency",
        "--timeout",
        f"{timeout_s}s",
    ]
    if script:
        command += ["-s", str(script)]
    done = subprocess.run(
        [*command, url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        env=None if env is None else {**os.environ, **env},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} {url} exited with {done.returncode}: "
            f"{(done.stderr + done.stdout).strip()}"
        )
    return parse_wrk(done.stdout)


def measure(url: str, args: argparse.Namespace, script: Path | None = None) -> Figures:
    """Median of --runs wrk runs at --connections (errors summed)."""
    runs = [
        wrk(
            url,
            threads=args.threads,
            connections=args.connections,
            duration=args.duration,
            script=script,
        )
        for _ in range(args.runs)
    ]
    return Figures(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.non_2xx for r in runs),
    )


def free_local_ports() -> int:
    """Source ports this host can still use for new connections: its local port
    range less the sockets holding one (TIME_WAIT from the previous runs too)."""
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    used = 0
    for listing in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError):
            used += len(Path(listing).read_text().splitlines()) - 1
    return (high - low + 1) - used


def wait_for_local_ports(connections: int, limit_s: float = PORT_WAIT_LIMIT_S) -> None:
    """A run after a large one waits (boundedly) for the last one's TIME_WAIT
    sockets to expire: otherwise wrk's connects fail on this host, and the
    table would blame the servers."""
    needed = connections + FD_MARGIN
    deadline = time.monotonic() + limit_s
    waited = False
    while free_local_ports() < needed and time.monotonic() < deadline:
        if not waited:
            print(
                f"  waiting for {needed} free local ports (TIME_WAIT of earlier runs)", flush=True
            )
            waited = True
        time.sleep(2)


def allow_open_files(connections: int) -> None:
    """wrk holds a socket per connection: raise the soft limit on open files
    (inherited by wrk) to the hard limit; fail if even that is too low."""
    needed = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"wrk with {connections} connections needs about {needed} open files, but the "
            f"hard limit (RLIMIT_NOFILE, ulimit -Hn) is {hard}: raise it (limits.conf, "
            "systemd's LimitNOFILE=) or use fewer connections"
        )
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def gunicorn(app_spec: str, env: dict[str, str], log: Path, port: int) -> Process:
    env = {**env, "APP_BIND": f"127.0.0.1:{port}", "APP_WORKERS": "2"}
    return Process(
        "gunicorn",
        [sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf", app_spec],
        env,
        log,
    )


@contextmanager
def serving(app_spec: str, env: dict[str, str], workdir: Path, probe: str) -> Iterator[str]:
    port = free_port()
    process = gunicorn(app_spec, env, workdir / f"gunicorn-{port}.log", port)
    process.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(base + probe)
        yield base
    finally:
        process.stop()


def raw_find_one_rate(
    uri: str, database: str, item_id: str, seconds: float, clients: int = 8
) -> float:
    """Raw PyMongo find_one by _id against the same server: the emulator's own ceiling."""
    from bson import ObjectId

    counts = [0] * clients
    stop = time.monotonic() + seconds

    def loop(slot: int) -> None:
        client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
        collection = client[database]["items"]
        oid = ObjectId(item_id)
        while time.monotonic() < stop:
            collection.find_one({"_id": oid})
            counts[slot] += 1
        client.close()

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def print_table(results: dict[str, Figures], baseline: Figures) -> None:
    print(
        f"\n{'target':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
        f"{'req/s vs baseline':>18}"
    )
    for name, fig in results.items():
        print(
            f"{name:32} {fig.rps:9.0f} {fig.p50_ms:8.2f} {fig.p99_ms:8.2f} {fig.non_2xx:8d} "
            f"{fig.rps / baseline.rps:17.0%}"
        )


def measure_deployment(args: argparse.Namespace) -> None:
    base = args.url.rstrip("/")
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.runs} runs each "
        f"(median) against {base}"
    )
    baseline = measure(base + args.baseline_path, args)
    results = {f"baseline GET {args.baseline_path}": baseline}
    for name, (path, script) in DEPLOYED.items():
        results[name] = measure(base + path, args, script)
    print_table(results, baseline)


def sweep_deployment(args: argparse.Namespace) -> None:
    base = args.url.rstrip("/")
    print(
        f"sweep: wrk -t{args.threads} -c<N> -d{args.duration}s --timeout {SWEEP_TIMEOUT_S}s "
        f"-s bench/count_status.lua, {args.runs} run(s) per row against {base}; rates and "
        f"latencies: medians of the runs, errors: totals of the runs",
        flush=True,
    )
    rows: list[SweepRow] = []
    for name, (path, script) in DEPLOYED.items():
        env = {"WRK_BASE_SCRIPT": str(script)} if script else None
        for connections in args.sweep:
            runs = []
            for _ in range(args.runs):
                wait_for_local_ports(connections)
                runs.append(
                    wrk(
                        base + path,
                        threads=args.threads,
                        connections=connections,
                        duration=args.duration,
                        timeout_s=SWEEP_TIMEOUT_S,
                        script=COUNT_SCRIPT,
                        env=env,
                    )
                )
            rows.append(sweep_row(name, connections, runs))
            print(f"  {name} at {connections} connections: done", flush=True)
    print()
    print(table(rows))
    print()
    print("\n".join(verdicts(rows)))


def connection_counts(text: str) -> list[int]:
    """--sweep's "64,1000,5000": the counts, each once, fewest first."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of connection counts: {text!r}") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be >= 1: {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs per target (median reported)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, help="wrk threads (default 1; 2 with --sweep)")
    parser.add_argument("--url", help="measure this deployed system instead (e.g. https://lb1)")
    parser.add_argument(
        "--baseline-path",
        default="/nginx/live",
        help="with --url: the baseline, a path the load balancer answers itself",
    )
    parser.add_argument(
        "--sweep",
        type=connection_counts,
        metavar="N,N,...",
        help="with --url: sweep these connection counts instead (e.g. 64,1000,5000,10000)",
    )
    args = parser.parse_args()
    if args.sweep and not args.url:
        parser.error("--sweep needs --url")
    if args.threads is None:
        args.threads = 2 if args.sweep else 1
    counts = args.sweep or [args.connections]
    if min(counts) < args.threads:
        parser.error("wrk needs at least as many connections as threads")
    allow_open_files(max(counts))
    if args.url:
        if args.sweep:
            sweep_deployment(args)
        else:
            measure_deployment(args)
        return

    dev = load_dev_env()
    if not dev.get("APP_TEST_BROKER_URL") or not dev.get("APP_TEST_REDIS_URL"):
        raise SystemExit("run scripts/dev-services.sh first")
    workdir = Path(tempfile.mkdtemp(prefix="queuesvc-bench-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    mongo: MongoEmulator | None = None
    if dev.get("APP_TEST_MONGODB_URI"):
        mongo_uri, mongo_name = dev["APP_TEST_MONGODB_URI"], "APP_TEST_MONGODB_URI"
    else:
        mongo = MongoEmulator(dev["APP_TEST_MONGOECO_PYTHON"], workdir)
        mongo.start()
        mongo_uri, mongo_name = mongo.uri, mongo.description
    env = {
        **base_env,
        "APP_ENV": "test",
        "APP_BROKER_URL": dev["APP_TEST_BROKER_URL"],
        "APP_REDIS_URL": dev["APP_TEST_REDIS_URL"],
        "APP_MONGODB_URI": mongo_uri,
        "APP_MONGODB_DATABASE": "queuesvc_bench",
    }
    results: dict[str, Figures] = {}
    try:
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
            f"{args.runs} runs each (median); gunicorn 2 workers; cores: {os.cpu_count()}"
        )
        print(f"MongoDB: {mongo_name}")
        with serving("bench.hello:app", env, workdir, "/") as base:
            results["baseline GET / (hello-world)"] = measure(base + "/", args)
        with serving("app.main:create_app()", env, workdir, "/health/live") as base:
            item = httpx.post(base + "/api/items", json={"name": "bench"}, timeout=10).json()
            targets = {
                "GET /health/live": (base + "/health/live", None),
                "GET /api/items/{id}": (f"{base}/api/items/{item['id']}", None),
                "POST /api/async/process": (base + "/api/async/process", POST_SCRIPT),
            }
            for name, (url, script) in targets.items():
                results[name] = measure(url, args, script)
            purge_queues(env)
            raw = raw_find_one_rate(mongo_uri, "queuesvc_bench", item["id"], args.duration)
    finally:
        if mongo:
            mongo.stop()
    baseline = results["baseline GET / (hello-world)"]
    print_table(results, baseline)
    item_rps = results["GET /api/items/{id}"].rps
    print(
        f"\nraw PyMongo find_one by _id, 8 threads, same server: {raw:.0f}/s; "
        f"GET /api/items/{{id}} reaches {item_rps / raw:.0%} of it"
    )
    submit = results["POST /api/async/process"]
    print(
        f"target: async submit >= 40% of baseline and p99 <= 25 ms: "
        f"{submit.rps / baseline.rps:.0%}, p99 {submit.p99_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
