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

With --url, measures a deployed system instead (the lab's load balancer,
say): GET /health/live and POST /api/async/process there, same wrk settings,
against nginx's own liveness answer on the same load balancer as the baseline
(--baseline-path, default /nginx/live: TLS and nginx, no app server).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.services import (  # noqa: E402
    MongoEmulator,
    Process,
    free_port,
    load_dev_env,
    purge_queues,
    wait_http_ok,
)

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def parse_wrk(output: str) -> Figures:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            raise ValueError(f"no {percent}% latency in wrk output:\n{output}")
        return float(match.group(1)) * UNITS[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if not rps:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    return Figures(
        float(rps.group(1)), latency("50"), latency("99"), int(errors.group(1)) if errors else 0
    )


def wrk(url: str, args: argparse.Namespace, script: Path | None = None) -> Figures:
    command = [
        "wrk",
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{args.duration}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run(
        [*command, url], check=True, capture_output=True, text=True, timeout=args.duration + 60
    ).stdout
    return parse_wrk(output)


def median(runs: list[Figures]) -> Figures:
    return Figures(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.non_2xx for r in runs),
    )


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
    baseline = median([wrk(base + args.baseline_path, args) for _ in range(args.runs)])
    results = {
        f"baseline GET {args.baseline_path}": baseline,
        "GET /health/live": median([wrk(base + "/health/live", args) for _ in range(args.runs)]),
        "POST /api/async/process": median(
            [
                wrk(base + "/api/async/process", args, REPO / "bench/post_process.lua")
                for _ in range(args.runs)
            ]
        ),
    }
    print_table(results, baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs per target (median reported)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--url", help="measure this deployed system instead (e.g. https://lb1)")
    parser.add_argument(
        "--baseline-path",
        default="/nginx/live",
        help="with --url: the baseline, a path the load balancer answers itself",
    )
    args = parser.parse_args()
    if args.url:
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
            results["baseline GET / (hello-world)"] = median(
                [wrk(base + "/", args) for _ in range(args.runs)]
            )
        with serving("app.main:create_app()", env, workdir, "/health/live") as base:
            item = httpx.post(base + "/api/items", json={"name": "bench"}, timeout=10).json()
            targets = {
                "GET /health/live": (base + "/health/live", None),
                "GET /api/items/{id}": (f"{base}/api/items/{item['id']}", None),
                "POST /api/async/process": (
                    base + "/api/async/process",
                    REPO / "bench/post_process.lua",
                ),
            }
            for name, (url, script) in targets.items():
                results[name] = median([wrk(url, args, script) for _ in range(args.runs)])
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
