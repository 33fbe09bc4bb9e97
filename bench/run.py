"""Benchmark the API under gunicorn (2 workers) on loopback, against the real services.

Every request of ours carries an API key (Authorization: Bearer, through
bench/bearer.lua, so the key never shows in a process list): the figures
include the key check. Locally the key is made with `python -m app keys create`
for an owner of this run (a tenant: every scope but admin), with quotas far out
of the benchmark's way (APP_QUOTA_*); against a deployment (--url) it is
QUEUESVC_BENCH_KEY's, a tenant key with tasks:submit.

Local mode (no --url) starts, each once and kept up throughout, a bare FastAPI
hello-world (bench/hello.py, the baseline), the service, the service without
its key check (bench/unkeyed.py, a benchmark baseline), and the peer
(bench/peer.py: the tutorial pattern, Celery's .delay() from an async route),
all under the same gunicorn settings, and measures with wrk at 64 connections,
in rounds so that the machine's noise hits every target alike (every other
round in reverse order): each of --runs rounds runs, in turn, GET /
(hello-world), GET /health/live, GET /api/items/{id} on the service and on the
unkeyed one, POST /api/async/process on both, and the peer's POST
/api/async/process. The hello-world and the peer get no key. The service's
queues are deleted before its servers start (purge_queues: a fresh layout)
and emptied, not deleted, after each of its submit runs (both servers
publish to them), the peer's queue after each of the peer's, so that no backlog
builds up (a queue deleted under a running publisher would swallow its next
messages unseen); the peer's queue is deleted at the end. Figures:
requests/s (wrk's Requests/sec: every answer, whatever its status), p50 and p99,
the non-2xx answers; medians over the rounds (non-2xx summed). Then the ratios
and the submit path's targets, each with its measured value: ours/peer for the
submit's req/s and p99 (target: >= 1.5x the peer's req/s with p99 <= the
peer's), ours/hello for the submit's req/s (target: >= 30%), health/hello
(target: >= 90%). Then the key check's cost (bench/keycheck.py): per route,
keyed against unkeyed req/s (ratio) and p50/p99 (the milliseconds added).

MongoDB here is the mongoeco emulator (see README), so GET /api/items/{id}
mostly measures the emulator: it is also reported as a ratio to raw PyMongo
find_one calls against the same server in the same run.

Then, unless --tasks 0, the worker throughput (bench/throughput.py): a real
Celery worker of the service (-Q default -c 2), --tasks short tasks submitted
through the API, tasks completed per second from the first submit to the last
SUCCESS stored in MongoDB; the raw kombu publish+consume rate of the same broker
with as many messages, and the ratio; and the CPU use of the worker with its
pool, the API, the MongoDB emulator, redis-server and RabbitMQ over the run (%
of one core, from /proc), the busiest named as the bound. It is skipped when
another consumer is on the default queue (a worker of someone else's test on
the shared broker would take some of the tasks). With --profile PATH,
before that, one more submit run (not counted in the figures) with py-spy
sampling one of the service's gunicorn workers: the raw (collapsed) stacks go
to PATH, and the shares of the samples by module group and the top frames are
printed (bench/profile.py).

Usage (as root, after `python3 -m scripts.lab services`, with .venv built
from constraints.txt and the dev extras):
    .venv/bin/python bench/run.py [--duration 10] [--runs 3] [--connections 64] [--tasks 300]
    .venv/bin/python bench/run.py --duration 5 --runs 1 --profile /tmp/submit.collapsed
    QUEUESVC_BENCH_KEY=$(python3 -m scripts.lab api-key demo) \
        .venv/bin/python bench/run.py --url https://192.168.56.10 [--duration 8] [--runs 3]
    QUEUESVC_BENCH_KEY=... .venv/bin/python bench/run.py --url https://192.168.56.10 \
        --sweep 64,1000,5000,10000

With --url (and QUEUESVC_BENCH_KEY), measures a deployed system instead (the
lab's load balancer, say): GET /health/live and POST /api/async/process there,
every request keyed (the baseline's too: the same requests), same wrk settings and
rounds, against nginx's own liveness answer on the same load balancer as the
baseline (--baseline-path, default /nginx/live: TLS and nginx, no app server);
then the submit's req/s as a share of GET /health/live's (target through lb1:
>= 25%). The peer is not deployed on lb1: the ours/peer comparison is local only.

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
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.celery_app import DEAD_QUEUE, QUEUE_NAMES  # noqa: E402
from bench import cpu, profile, throughput, unkeyed  # noqa: E402
from bench.apikeys import (  # noqa: E402
    DEPLOYED_KEY_VARIABLE,
    authorization,
    deployed_key,
    local_key,
    run_owner,
)
from bench.broker import delete_queue, empty_queues  # noqa: E402
from bench.keycheck import key_check_lines  # noqa: E402
from bench.local import Server, services, serving  # noqa: E402
from bench.peer import PEER_QUEUE  # noqa: E402
from bench.sweep import (  # noqa: E402
    HEALTH_TARGET,
    SUBMIT_TARGET,
    SweepRow,
    sweep_row,
    table,
    verdicts,
)
from bench.targets import Figures, deployed_lines, figures, local_lines  # noqa: E402
from bench.wrkparse import WrkRun  # noqa: E402
from bench.wrkrun import wrk  # noqa: E402
from tests.integration.services import purge_queues  # noqa: E402

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
# The local targets, in the order each round measures them.
HELLO = "GET / (hello-world)"
ITEM = "GET /api/items/{id}"
PEER = "peer POST /api/async/process"
# The keyed routes measured on bench/unkeyed.py too: route -> its twin's name.
UNKEYED = {
    ITEM: "unkeyed GET /api/items/{id}",
    SUBMIT_TARGET: "unkeyed POST /api/async/process",
}
DATABASE = "queuesvc_bench"
# Locally: quotas far out of the benchmark's way (it measures the server, one
# owner at thousands of submits a second).
LOCAL_SETTINGS = {
    "APP_QUOTA_SUBMIT_RATE": "100000",
    "APP_QUOTA_SUBMIT_BURST": "1000000",
    "APP_QUOTA_IN_FLIGHT_COST": "100000000",
}
# Wait after wrk starts before py-spy attaches, so that it samples load only.
PROFILE_LEAD_S = 0.5
DEFAULT_TASKS = 300


@dataclass(frozen=True)
class Target:
    url: str
    script: Path | None = None  # wrk script; None: GET
    after: Callable[[], None] | None = None  # after each of its runs (purge a queue)
    key: str | None = None  # sent as Authorization: Bearer; None: no header


def measure_rounds(targets: Mapping[str, Target], args: argparse.Namespace) -> dict[str, Figures]:
    """--runs rounds, each running every target once in turn, so that a noisy
    stretch of the machine hits them all alike; every other round in reverse
    order, so that a drift over the run (a cache warming up, a neighbour's
    load) favours no target over the one next to it. Medians over the rounds."""
    runs: dict[str, list[WrkRun]] = {name: [] for name in targets}
    for number in range(1, args.runs + 1):
        order = list(targets.items())
        for name, target in order if number % 2 else reversed(order):
            runs[name].append(
                wrk(
                    target.url,
                    threads=args.threads,
                    connections=args.connections,
                    duration=args.duration,
                    script=target.script,
                    key=target.key,
                )
            )
            if target.after:
                target.after()
        print(f"  round {number}/{args.runs} done", flush=True)
    return {name: figures(done) for name, done in runs.items()}


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


def measure_deployment(args: argparse.Namespace, key: str) -> None:
    """Every request keyed, the baseline's too (nginx ignores it): the same requests."""
    base = args.url.rstrip("/")
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.runs} round(s) "
        f"(median) against {base}, every request with the key in {DEPLOYED_KEY_VARIABLE}",
        flush=True,
    )
    baseline_name = f"baseline GET {args.baseline_path}"
    targets = {baseline_name: Target(base + args.baseline_path, key=key)}
    for name, (path, script) in DEPLOYED.items():
        targets[name] = Target(base + path, script, key=key)
    results = measure_rounds(targets, args)
    print_table(results, results[baseline_name])
    print()
    print("\n".join(deployed_lines(results[HEALTH_TARGET], results[SUBMIT_TARGET])))


def sweep_deployment(args: argparse.Namespace, key: str) -> None:
    base = args.url.rstrip("/")
    print(
        f"sweep: wrk -t{args.threads} -c<N> -d{args.duration}s --timeout {SWEEP_TIMEOUT_S}s "
        f"-s bench/count_status.lua, {args.runs} run(s) per row against {base}, every request "
        f"with the key in {DEPLOYED_KEY_VARIABLE}; rates and latencies: medians of the runs, "
        "errors: totals of the runs",
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
                        key=key,
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


def worker_of(server: Server) -> int:
    """One of the server's gunicorn workers (the lowest pid)."""
    workers = cpu.descendants(server.pid, cpu.snapshot()) - {server.pid}
    if not workers:
        raise SystemExit(f"gunicorn {server.pid} has no workers")
    return min(workers)


def profile_submit(server: Server, key: str, args: argparse.Namespace) -> None:
    """One more submit run, with py-spy on one of the service's workers."""
    seconds = max(1, args.duration - 1)
    pid = worker_of(server)
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(
            wrk,
            server.base + "/api/async/process",
            threads=args.threads,
            connections=args.connections,
            duration=args.duration,
            script=POST_SCRIPT,
            key=key,
        )
        time.sleep(PROFILE_LEAD_S)
        spy = profile.record(pid, seconds, args.profile)
        said, _ = spy.communicate(timeout=seconds + 60)
        run = load.result()
    if spy.returncode != 0:
        raise SystemExit(f"py-spy exited with {spy.returncode}: {said.strip()}")
    counted = re.search(r"Samples: \d+ Errors: \d+", said)
    summary = profile.summarize(profile.parse_collapsed(args.profile.read_text(), str(REPO)))
    print(
        f"\nprofile: py-spy on gunicorn worker {pid} for {seconds} s of one more submit run "
        f"({run.rps:.0f} req/s under the profiler, not counted above); "
        f"{counted.group(0) if counted else ''}; raw stacks in {args.profile}"
    )
    print(profile.format_summary(summary))


def create_item(server: Server, key: str) -> str:
    answer = httpx.post(
        server.base + "/api/items", json={"name": "bench"}, headers=authorization(key), timeout=10
    )
    if answer.status_code != 201:
        raise SystemExit(f"creating the item to read: {answer.status_code} {answer.text}")
    return str(answer.json()["id"])


def measure_locally(args: argparse.Namespace) -> None:
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.runs} round(s), "
        f"medians; gunicorn 2 workers each; cores: {os.cpu_count()}",
        flush=True,
    )
    with ExitStack() as stack:
        local = stack.enter_context(services(DATABASE, LOCAL_SETTINGS))
        env, broker, workdir = local.env, local.broker, local.workdir
        if local.mongo_pid is None:
            mongo_cpu = ("mongod", cpu.Group(cpu.by_name("mongod"), os.cpu_count() or 1))
        else:
            # Python: the GIL holds it to one core.
            mongo_cpu = ("MongoDB emulator", cpu.Group(cpu.tree(local.mongo_pid), 1))
        print(f"MongoDB: {local.mongo_name}", flush=True)
        owner = run_owner("tenant")
        key = local_key(env, owner)
        print(f"API key: a tenant's (every scope but admin), owner {owner}", flush=True)
        purge_queues(env)  # before the service declares them
        hello = stack.enter_context(serving("bench.hello:app", env, workdir, "/"))
        ours = stack.enter_context(serving("app.main:create_app()", env, workdir, "/health/live"))
        ours_unkeyed = stack.enter_context(
            serving(
                "bench.unkeyed:create_app()",
                {**env, unkeyed.OWNER_VARIABLE: owner},
                workdir,
                "/health/live",
            )
        )
        # Registered before the peer starts, so it runs after the peer has stopped.
        stack.callback(delete_queue, broker, PEER_QUEUE)
        peer = stack.enter_context(serving("bench.peer:app", env, workdir, "/docs"))
        item_id = create_item(ours, key)

        def empty_ours() -> None:
            # Emptied after each run, not deleted (see empty_queues).
            empty_queues(broker, [*QUEUE_NAMES, DEAD_QUEUE])

        # Each keyed route next to its unkeyed twin: the key check's cost
        # comes from neighbouring runs.
        targets = {
            HELLO: Target(hello.base + "/"),
            HEALTH_TARGET: Target(ours.base + "/health/live", key=key),
            ITEM: Target(f"{ours.base}/api/items/{item_id}", key=key),
            UNKEYED[ITEM]: Target(f"{ours_unkeyed.base}/api/items/{item_id}", key=key),
            SUBMIT_TARGET: Target(ours.base + "/api/async/process", POST_SCRIPT, empty_ours, key),
            UNKEYED[SUBMIT_TARGET]: Target(
                ours_unkeyed.base + "/api/async/process", POST_SCRIPT, empty_ours, key
            ),
            PEER: Target(
                peer.base + "/api/async/process",
                POST_SCRIPT,
                lambda: empty_queues(broker, [PEER_QUEUE]),
            ),
        }
        results = measure_rounds(targets, args)
        print_table(results, results[HELLO])
        print()
        print(
            "\n".join(
                local_lines(
                    results[HELLO], results[HEALTH_TARGET], results[SUBMIT_TARGET], results[PEER]
                )
            )
        )
        print()
        pairs = {route: (results[route], results[twin]) for route, twin in UNKEYED.items()}
        print("\n".join(key_check_lines(pairs)))
        raw = raw_find_one_rate(local.mongo_uri, DATABASE, item_id, args.duration)
        print(
            f"\nraw PyMongo find_one by _id, 8 threads, same server: {raw:.0f}/s; "
            f"GET /api/items/{{id}} reaches {results[ITEM].rps / raw:.0%} of it",
            flush=True,
        )
        if args.profile:
            profile_submit(ours, key, args)
            empty_ours()
        if args.tasks:
            lines = throughput.run_stage(
                base=ours.base,
                key=key,
                env=env,
                workdir=workdir,
                mongo_uri=local.mongo_uri,
                database=DATABASE,
                tasks=args.tasks,
                # How many cores each can use: a Python process one (the GIL),
                # Redis one, RabbitMQ and mongod all.
                groups={
                    "API gunicorn, ours (2 workers)": cpu.Group(cpu.tree(ours.pid), 2),
                    mongo_cpu[0]: mongo_cpu[1],
                    "redis-server (shared)": cpu.Group(cpu.by_name("redis-server"), 1),
                    "RabbitMQ beam.smp (shared)": cpu.Group(
                        cpu.by_name("beam.smp"), os.cpu_count() or 1
                    ),
                    "bench client (this process)": cpu.Group(cpu.only(os.getpid()), 1),
                },
            )
            print(f"\nworker throughput ({throughput.WORKER_CONCURRENCY} pool processes):")
            print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--runs", type=int, default=3, help="rounds: runs per target (medians reported)"
    )
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
    parser.add_argument(
        "--tasks",
        type=int,
        help=f"local: tasks for the worker throughput stage (default {DEFAULT_TASKS}; 0: skip it)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="local: py-spy one of our gunicorn workers in one more submit run, stacks to PATH",
    )
    args = parser.parse_args()
    if args.sweep and not args.url:
        parser.error("--sweep needs --url")
    if args.url and (args.profile or args.tasks is not None):
        parser.error("--tasks and --profile are for local runs")
    if args.tasks is None:
        args.tasks = DEFAULT_TASKS
    if args.tasks < 0:
        parser.error("--tasks must be >= 0")
    if args.threads is None:
        args.threads = 2 if args.sweep else 1
    counts = args.sweep or [args.connections]
    if min(counts) < args.threads:
        parser.error("wrk needs at least as many connections as threads")
    allow_open_files(max(counts))
    if args.url:
        key = deployed_key()
        if args.sweep:
            sweep_deployment(args, key)
        else:
            measure_deployment(args, key)
        return

    measure_locally(args)


if __name__ == "__main__":
    main()
