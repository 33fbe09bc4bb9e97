"""Flood: one API key floods the submit route while another submits at a calm pace.

Against the local service (bench/local.py: gunicorn, 2 workers) with the
quotas a deployment has (the app's defaults; roles/app sets none): per owner
20 submits/s in bursts of 100 and an in-flight cost of 200,000; the `default`
queue capped as the rabbitmq role caps it (bench/queuecap.py; if rabbitmqctl
cannot set the policy, the run goes on without the cap and says so). For
--duration seconds, at once:
- the flood key (owner bench-flood-*): wrk -c64 on POST /api/async/process,
  --iterations 1000 a task (a large task: the in-flight cost binds too);
- the calm key (another owner, bench-calm-*): --calm-rate submits a second
  (5) with httpx, iterations 10, paced by the clock whatever the answers
  do (bench/paced.py: independent users);
- the depth of `default`, sampled each second by AMQP passive declares.
No worker runs: the accepted tasks stay queued, so the depth is everything
both keys got past the quotas and the in-flight cost is never given back (a
deployment whose workers are behind); a worker would also take this
machine's cores from the API whose answers are measured.

Prints the flood key's answers by status (202, 429 over a quota, 503 the
queue full or a process at its in-flight limit, others), the calm key's
accepted/sent and p50/p99, and the depth each second with its maximum. At
the end the service's queues are emptied, the policy cleared, the server and
the emulator stopped (by PID). About 30 s in all with the default 10 s.

Usage (as bench/run.py):
    .venv/bin/python bench/flood.py [--duration 10] [--connections 64] [--iterations 1000]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.celery_app import DEAD_QUEUE, DEFAULT_QUEUE, QUEUE_NAMES  # noqa: E402
from app.keys import Scope  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.status import Quotas  # noqa: E402
from bench.apikeys import authorization, local_key, run_owner  # noqa: E402
from bench.broker import DepthSampler, empty_queues  # noqa: E402
from bench.local import services, serving  # noqa: E402
from bench.paced import Answer, paced_posts, percentile  # noqa: E402
from bench.queuecap import (  # noqa: E402
    DEFAULT_QUEUE_CAP,
    QueueCap,
    capped,
    policy_of,
    rabbitmqctl,
    vhost_of,
)
from bench.wrkparse import WrkRun, by_status  # noqa: E402
from bench.wrkrun import wrk  # noqa: E402
from tests.integration.services import load_dev_env, purge_queues  # noqa: E402

SUBMIT_PATH = "/api/async/process"
POST_SCRIPT = REPO / "bench/post_process.lua"
COUNT_SCRIPT = REPO / "bench/count_status.lua"
CALM_ITERATIONS = 10
SUBMIT_ONLY = frozenset({Scope.TASKS_SUBMIT})
DATABASE = "queuesvc_bench_flood"


def deployed_quotas() -> Quotas:
    """The app's default quotas: what a deployment has (roles/app sets none)."""
    fields = Settings.model_fields
    return Quotas(
        rate=fields["quota_submit_rate"].default,
        burst=fields["quota_submit_burst"].default,
        in_flight_cost=fields["quota_in_flight_cost"].default,
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def flood_lines(run: WrkRun, owner: str, args: argparse.Namespace, quotas: Quotas) -> list[str]:
    statuses = dict(run.statuses or {})
    counts = {status: statuses.pop(status, 0) for status in (202, 429, 503)}
    by_rate = quotas.burst + quotas.rate * args.duration
    return [
        f"flood key (owner {owner}): wrk -c{args.connections} -d{args.duration}s, iterations "
        f"{args.iterations} a task: {run.requests} answers ({run.rps:.0f}/s): "
        f"202: {counts[202]}, 429: {counts[429]}, 503: {counts[503]}, "
        f"other: {by_status(statuses)}; p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms",
        f"  what its quotas let through: {by_rate:.0f} by rate ({quotas.burst} + "
        f"{quotas.rate:g}/s x {args.duration} s), {quotas.in_flight_cost // args.iterations} "
        f"by in-flight cost ({quotas.in_flight_cost} / {args.iterations})",
    ]


def calm_lines(answers: Sequence[Answer], owner: str, args: argparse.Namespace) -> list[str]:
    statuses = Counter("no answer" if a.status is None else str(a.status) for a in answers)
    accepted = statuses.pop("202", 0)
    answered = [a.seconds for a in answers if a.status is not None]
    latency = (
        f"p50 {ms(percentile(answered, 0.5))}, p99 {ms(percentile(answered, 0.99))} "
        f"(of {len(answered)} answers)"
        if answered
        else "no answers"
    )
    refused = " ".join(f"{status}:{n}" for status, n in sorted(statuses.items())) or "-"
    share = f"{accepted / len(answers):.0%}" if answers else "-"
    return [
        f"calm key (owner {owner}): {args.calm_rate:g}/s for {args.duration} s, iterations "
        f"{CALM_ITERATIONS}: accepted {accepted} of {len(answers)} sent ({share}); {latency}; "
        f"not accepted: {refused}",
    ]


def depth_lines(depths: Sequence[int], queue: str, cap: str) -> list[str]:
    return [
        f"depth of queue {queue!r} each second: {' '.join(map(str, depths)) or '-'}; "
        f"max {max(depths, default=0)}",
        f"  cap: {cap}",
        "workers: none (the accepted tasks stay queued: the depth is all that both keys got "
        "past the quotas)",
    ]


def cap_in_force(problem: str | None, cap: QueueCap, listing: str) -> str:
    """What the printout says of the cap: the policy seen on the queue, or why none."""
    if problem:
        return f"none, measured without it ({problem})"
    policy = policy_of(listing, cap.queue)
    seen = f"policy {policy} in force" if policy else "NOT seen on the queue"
    return f"{cap.describe()} as the rabbitmq role sets it ({seen})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of flood")
    parser.add_argument("--connections", type=int, default=64, help="the flood's wrk connections")
    parser.add_argument("--iterations", type=int, default=1000, help="the flood's task size")
    parser.add_argument("--calm-rate", type=float, default=5.0, help="the calm key's submits/s")
    args = parser.parse_args()
    if args.duration < 1 or args.connections < 1 or args.calm_rate <= 0:
        parser.error("--duration, --connections and --calm-rate must be positive")
    if not 1 <= args.iterations <= 10_000:
        parser.error("--iterations: 1 to 10000, as the API takes")
    ctl = load_dev_env().get("APP_TEST_RABBITMQCTL", "rabbitmqctl")
    quotas = deployed_quotas()
    print(
        f"flood: {args.duration} s; quotas per owner, the app's defaults as deployed: "
        f"{quotas.rate:g} submits/s, bursts of {quotas.burst}, in-flight cost "
        f"{quotas.in_flight_cost}",
        flush=True,
    )
    with ExitStack() as stack:
        local = stack.enter_context(services(DATABASE, {}))
        env, broker, vhost = local.env, local.broker, vhost_of(local.broker)
        purge_queues(env)  # a fresh layout, before the service declares it
        problem = stack.enter_context(capped(DEFAULT_QUEUE_CAP, ctl, vhost))
        # Emptied once the server has stopped and before the policy goes: a
        # quorum queue that refused publishes resumes them only when drained
        # under its cap (rabbitmq-server#12206).
        stack.callback(empty_queues, broker, [*QUEUE_NAMES, DEAD_QUEUE])
        owners = [run_owner("flood"), run_owner("calm")]
        # The keys are made while the server starts: both take seconds here.
        with ThreadPoolExecutor(2) as pool:
            keys = pool.map(lambda owner: local_key(env, owner, SUBMIT_ONLY), owners)
            api = stack.enter_context(
                serving("app.main:create_app()", env, local.workdir, "/health/live")
            )
            flood_key, calm_key = keys
        sampler = DepthSampler(broker, DEFAULT_QUEUE)
        sampler.start()
        with ThreadPoolExecutor(1) as pool:
            calm = pool.submit(
                paced_posts,
                api.base + SUBMIT_PATH,
                headers=authorization(calm_key),
                body={"data": "calm payload", "iterations": CALM_ITERATIONS},
                rate=args.calm_rate,
                duration=args.duration,
            )
            flood = wrk(
                api.base + SUBMIT_PATH,
                threads=1,
                connections=args.connections,
                duration=args.duration,
                script=COUNT_SCRIPT,
                env={"WRK_BASE_SCRIPT": str(POST_SCRIPT), "WRK_ITERATIONS": str(args.iterations)},
                key=flood_key,
            )
            answers = calm.result()
        depths = sampler.stop()
        listing = "" if problem else rabbitmqctl(ctl, "list_queues", "-p", vhost, "name", "policy")
    print()
    print("\n".join(flood_lines(flood, owners[0], args, quotas)))
    print("\n".join(calm_lines(answers, owners[1], args)))
    cap = cap_in_force(problem, DEFAULT_QUEUE_CAP, listing)
    print("\n".join(depth_lines(depths, DEFAULT_QUEUE, cap)))


if __name__ == "__main__":
    main()
