"""Fault drills: each fault injected under bounded load through the load balancer.

Every drill asserts the same things: no accepted task lost (each 202 ends
SUCCESS), no duplicate or split outcome (status and stored result agree; an
import creates each row once), no non-2xx on a route that does not need the
failed part, only clean 503s (JSON `detail` and `Retry-After`) on one that
does, and recovery within 5 s of the part being back. Each prints one line of
figures (`drill <name>: ...`), repeated at the end of the run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from tests.faults.conftest import record
from tests.faults.drill import (
    API_PORT,
    APP_HOSTS,
    DEFAULT_WORKER,
    FINAL_STATES,
    HOSTS,
    MONGODB,
    RABBITMQ,
    REDIS,
    RUNNING_STATES,
    Lab,
    Ledger,
    Load,
    Part,
    count_items,
    delete_items,
    fmt_seconds,
    format_routes,
    lives,
    reads,
    route_problems,
    settle,
    submit,
    submits,
    task_status,
    wait_final,
)

RUN = f"{time.strftime('%m%d%H%M%S')}-{uuid.uuid4().hex[:4]}"
WARMUP = 3.0  # seconds of load before the fault
OUTAGE = 10.0  # seconds a part stays stopped
TAIL = 2.0  # seconds of load after recovery
RECOVERY_LIMIT = 5.0  # seconds from the part being back to the first 2xx that needed it
SETTLE = 180.0  # seconds every accepted task gets to reach a final state
# Tasks surely running when a worker dies: LONG_TASKS of LONG iterations (a few
# seconds here); fewer than the 6 pool processes, so short tasks show when work
# flows again.
LONG = 1000
LONG_TASKS = 3
IMPORT_ROWS = 1000  # about 10 s of upserts on the lab's MongoDB emulator
T = TypeVar("T")


def parallel(function: Callable[[str], T], hosts: Iterable[str]) -> list[T]:
    hosts = list(hosts)
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        return list(pool.map(function, hosts))


def wall(monotonic: float) -> float:
    """time.time() of a time.monotonic() instant (results carry wall-clock stamps)."""
    return time.time() - (time.monotonic() - monotonic)


@dataclass
class Report:
    """One drill's figures and what went wrong; `finish` records the line and asserts."""

    name: str
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    def tasks(self, ledger: Ledger, ids: list[str], extra_dups: int = 0) -> str:
        lost, split, stored = ledger.lost, ledger.split, ledger.stored
        self.check(
            not lost,
            f"{len(lost)} of {len(ids)} accepted tasks not SUCCESS after "
            f"{ledger.seconds:.0f} s ({len(stored)} of them with an outcome stored in "
            f"MongoDB that their status does not show):\n{ledger.describe(lost)}",
        )
        self.check(
            not split,
            f"{len(split)} tasks whose status and stored result disagree:\n"
            f"{ledger.describe(split)}",
        )
        return (
            f"accepted={len(ids)} lost={len(lost)}"
            + (f" (outcome stored: {len(stored)})" if stored else "")
            + f" dup={len(split) + extra_dups} "
            f"reruns={ledger.reruns} settled={ledger.seconds:.0f}s"
        )

    def recovery(self, seconds: float | None, what: str) -> str:
        self.check(
            seconds is not None and seconds <= RECOVERY_LIMIT,
            f"recovery {fmt_seconds(seconds)} ({what}) exceeds {RECOVERY_LIMIT:.0f} s",
        )
        return f"recovery={fmt_seconds(seconds)}"

    def finish(self, *figures: str) -> None:
        record(f"drill {self.name}: " + " ".join(f for f in figures if f))
        assert not self.problems, f"drill {self.name}:\n" + "\n".join(self.problems)


def running_count(http: httpx.Client, ids: list[str]) -> int:
    return sum(1 for i in ids if task_status(http, i).get("status") in RUNNING_STATES)


def wait_running(http: httpx.Client, ids: list[str], want: int, timeout: float = 60) -> int:
    """Wait until at least `want` of the tasks run; returns how many do."""
    deadline = time.monotonic() + timeout
    count = running_count(http, ids)
    while count < want and time.monotonic() < deadline:
        time.sleep(0.2)
        count = running_count(http, ids)
    return count


def wait_restarted(lab: Lab, host: str, unit: str, old_pid: str, timeout: float = 90) -> float:
    """Wait until a killed unit runs again under a new main process; returns that instant."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = lab.unit(host, unit)
        if state.get("ActiveState") == "active" and state.get("MainPID") not in ("0", old_pid):
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"{unit} on {host} not running again within {timeout:.0f} s")


def per_host(ledger: Ledger, backs: dict[str, float]) -> dict[str, float | None]:
    """Each host's seconds from being back to the first task it finished after."""
    return {host: ledger.finished_after(wall(back), [host]) for host, back in backs.items()}


def slowest(seconds: dict[str, float | None]) -> float | None:
    values = list(seconds.values())
    return None if not values or None in values else max(v for v in values if v is not None)


def by_host(seconds: dict[str, float | None]) -> str:
    return "(" + " ".join(f"{host}={fmt_seconds(s)}" for host, s in seconds.items()) + ")"


def outage(lab: Lab, part: Part, seconds: float, load: Load, route: str) -> float | None:
    """Stop a part for `seconds` under the running load, start it again; returns
    the seconds from it being back to the first 2xx on `route`."""
    time.sleep(WARMUP)
    try:
        lab.stop(part)
        time.sleep(seconds)
    finally:
        lab.start(part)
    back = lab.wait_back(part)
    recovery = load.wait_ok(route, back, timeout=30)
    time.sleep(TAIL)
    return recovery


def long_tasks_running(http: httpx.Client) -> tuple[list[str], int]:
    """After the warm-up, submit LONG_TASKS long tasks and wait until they run (the
    workers are killed mid-task); returns their ids and how many run."""
    time.sleep(WARMUP)
    long_ids = [submit(http, LONG, f"drill long {n}") for n in range(LONG_TASKS)]
    running = wait_running(http, long_ids, want=LONG_TASKS, timeout=60)
    return long_ids, running


# --- the drills ----------------------------------------------------------------------------


def test_every_default_worker_sigkilled_mid_task(drill: Lab) -> None:
    report = Report("worker-sigkill-all")
    with drill.client() as http, Load(drill, [submits(), lives()]) as load:
        long_ids, running = long_tasks_running(http)
        pids = {host: drill.unit(host, DEFAULT_WORKER)["MainPID"] for host in APP_HOSTS}
        parallel(lambda host: drill.kill_unit(host, DEFAULT_WORKER), APP_HOSTS)
        backs = dict(
            zip(
                APP_HOSTS,
                parallel(lambda h: wait_restarted(drill, h, DEFAULT_WORKER, pids[h]), APP_HOSTS),
                strict=True,
            )
        )
        time.sleep(10)  # the restarted pools take the queue again
    report.check(running > 0, "no task was running when the workers were killed")
    ids = load.accepted() + long_ids
    ledger = settle(drill, ids, SETTLE)
    report.problems += route_problems(load, needs=())
    report.finish(
        report.tasks(ledger, ids),
        format_routes(load) + ";",
        f"running_at_kill={running}",
        report.recovery(
            ledger.finished_after(wall(min(backs.values()))),
            "the first unit back to the first task finished",
        ),
        by_host(per_host(ledger, backs)),
    )


def test_one_pool_process_per_host_sigkilled(drill: Lab) -> None:
    report = Report("pool-process-sigkill")
    with drill.client() as http, Load(drill, [submits(), lives()]) as load:
        long_ids, running = long_tasks_running(http)
        pools = {host: drill.pool_processes(host) for host in APP_HOSTS}
        victims = {host: children[0] for host, (_, children) in pools.items() if children}
        report.check(len(victims) == len(APP_HOSTS), f"pool processes not found: {pools}")
        parallel(lambda host: drill.kill_pid(host, victims[host]), victims)

        def refilled(host: str) -> float:
            main, children = pools[host]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now_main, now_children = drill.pool_processes(host)
                if (
                    now_main == main
                    and len(now_children) >= len(children)
                    and victims[host] not in now_children
                ):
                    return time.monotonic()
                time.sleep(0.1)
            raise AssertionError(f"{host}: the pool was not refilled within 60 s")

        backs = dict(zip(victims, parallel(refilled, victims), strict=True))
        time.sleep(6)
    report.check(running > 0, "no task was running when the pool processes were killed")
    ids = load.accepted() + long_ids
    ledger = settle(drill, ids, SETTLE)
    hosts = per_host(ledger, backs)
    report.problems += route_problems(load, needs=())
    report.finish(
        report.tasks(ledger, ids),
        format_routes(load) + ";",
        f"running_at_kill={running}",
        report.recovery(slowest(hosts), "a pool refilled to its next task finished"),
        by_host(hosts),
    )


def outage_drill(lab: Lab, name: str, part: Part, route: str, back_to: str) -> None:
    """Stop `part` for OUTAGE seconds under submits, liveness and item reads: every
    accepted task ends once, and only `route` (the one that needs `part`) may
    answer 503; the recovery is timed from `part` back to `back_to`."""
    report = Report(name)
    with Load(lab, [submits(), lives(), reads(2)]) as load:
        recovery = outage(lab, part, OUTAGE, load, route)
    ids = load.accepted()
    ledger = settle(lab, ids, SETTLE)
    report.problems += route_problems(load, needs={route})
    report.finish(
        report.tasks(ledger, ids),
        format_routes(load) + ";",
        report.recovery(recovery, back_to),
    )


def test_rabbitmq_stopped_under_submits(drill: Lab) -> None:
    outage_drill(drill, "rabbitmq-stop", RABBITMQ, "submit", "RabbitMQ back to the first 202")


def test_rabbitmq_restarted_with_tasks_queued(drill: Lab) -> None:
    report = Report("rabbitmq-restart-queued")
    with drill.client() as http, Load(drill, [submits(rate=3), lives(), reads(2)]) as load:
        time.sleep(WARMUP)
        # About 25 s of work for the six pool processes: most of it is queued.
        burst = [submit(http, 400, f"drill queued {n}") for n in range(90)]
        before = drill.queue_depths().get("default", 0)
        pending = sum(1 for i in burst if task_status(http, i).get("status") == "PENDING")
        try:
            drill.systemctl(RABBITMQ.host, "restart", RABBITMQ.unit)
        finally:
            drill.start(RABBITMQ)
        back = drill.wait_back(RABBITMQ)
        recovery = load.wait_ok("submit", back, timeout=30)
        time.sleep(TAIL)
    report.check(pending > 0, "no task was queued when RabbitMQ restarted")
    ids = load.accepted() + burst
    ledger = settle(drill, ids, SETTLE)
    report.problems += route_problems(load, needs={"submit"})
    report.finish(
        report.tasks(ledger, ids),
        format_routes(load) + ";",
        f"queued_at_restart={before} (PENDING: {pending})",
        report.recovery(recovery, "RabbitMQ back to the first 202"),
    )


def test_mongodb_stopped_under_submits(drill: Lab) -> None:
    outage_drill(
        drill, "mongodb-stop", MONGODB, "items", "MongoDB back to the first GET /api/items 200"
    )


def test_mongodb_stopped_under_reads(drill: Lab) -> None:
    report = Report("mongodb-stop-reads")
    with Load(drill, [reads(5), lives(5)]) as load:
        recovery = outage(drill, MONGODB, 12.0, load, "items")
    report.problems += route_problems(load, needs={"items"})
    report.finish(
        "accepted=0 lost=0 dup=0",
        format_routes(load) + ";",
        report.recovery(recovery, "MongoDB back to the first GET /api/items 200"),
    )


def test_redis_stopped_under_submits(drill: Lab) -> None:
    outage_drill(drill, "redis-stop", REDIS, "submit", "Redis back to the first 202")


def import_drill(lab: Lab, part: Part, route: str) -> None:
    """Restart `part` while a CSV import of IMPORT_ROWS new rows runs."""
    report = Report(f"{part.name}-restart-import")
    prefix = f"drill-{RUN}-{part.name}-"
    rows = "".join(f"{prefix}{n:05d},{prefix}{n:05d}\n" for n in range(IMPORT_ROWS))
    csv = "external_id,name\n" + rows
    streams = [submits(), lives()] + ([reads(2)] if route == "items" else [])
    with lab.client(timeout=60) as http, Load(lab, streams) as load:
        time.sleep(WARMUP)
        response = http.post(
            "/api/async/import", files={"file": (f"{prefix}.csv", csv.encode(), "text/csv")}
        )
        assert response.status_code == 202, response.text
        import_id = str(response.json()["task_id"])
        running = wait_running(http, [import_id], want=1, timeout=60)
        try:
            lab.systemctl(part.host, "restart", part.unit)
        finally:
            lab.start(part)
        back = lab.wait_back(part)
        recovery = load.wait_ok(route, back, timeout=30)
        time.sleep(TAIL)
    report.check(running == 1, "the import was not running when the part restarted")
    ids = [*load.accepted(), import_id]
    try:
        ledger = settle(lab, ids, SETTLE)
        with lab.client(timeout=60) as http:
            items, distinct = count_items(http, prefix)
    finally:
        # The drill's rows go again: the emulator's upserts slow down as items grow.
        with lab.client(timeout=60) as http:
            cleaned = delete_items(http, prefix, seconds=60)
    result = ledger.statuses.get(import_id, {}).get("result") or {}
    written = int(result.get("inserted") or 0) + int(result.get("updated") or 0)
    report.check(
        written == IMPORT_ROWS,
        f"import result: inserted+updated={written}, not {IMPORT_ROWS}: {result}",
    )
    report.check(items == IMPORT_ROWS, f"{items} items named {prefix}*, not {IMPORT_ROWS}")
    report.check(distinct == items, f"{items} items but {distinct} distinct external ids")
    report.problems += route_problems(load, needs={route})
    report.finish(
        report.tasks(ledger, ids, extra_dups=max(0, items - IMPORT_ROWS)),
        f"import: rows={IMPORT_ROWS} items={items} inserted={result.get('inserted')} "
        f"updated={result.get('updated')} retries={ledger.statuses[import_id].get('retries')} "
        f"deleted_after={cleaned};",
        format_routes(load) + ";",
        report.recovery(recovery, f"{part.name} back to the first 2xx on {route}"),
    )


def test_redis_restarted_during_csv_import(drill: Lab) -> None:
    import_drill(drill, REDIS, "submit")


def test_mongodb_restarted_during_csv_import(drill: Lab) -> None:
    import_drill(drill, MONGODB, "items")


def test_app3_powered_off_under_reads_and_submits(drill: Lab) -> None:
    report = Report("app3-power-off")
    host = "app3"
    upstream = f"{HOSTS[host]}:{API_PORT}"
    with Load(drill, [submits(), lives(), reads(2)]) as load:
        time.sleep(WARMUP)
        try:
            drill.power_off(host)
            time.sleep(OUTAGE)
        finally:
            drill.power_on(host)
        # Back: its API answers. Then nginx must send it requests again (any
        # route) once the server's fail_timeout has passed.
        back = drill.wait_api(host)
        recovery = load.wait_ok(None, back, timeout=40, upstream=upstream)
        time.sleep(TAIL)
    ids = load.accepted()
    ledger = settle(drill, ids, SETTLE)
    report.problems += route_problems(load, needs=())
    served = sum(1 for o in load.snapshot() if o.upstream == upstream and o.sent >= back)
    report.finish(
        report.tasks(ledger, ids),
        format_routes(load) + ";",
        f"served_by_app3_after_back={served}",
        report.recovery(recovery, "app3's API answering to its first answer through lb1"),
    )


# --- poison messages ---------------------------------------------------------------------

PUBLISH_POISON = """
import json, os, sys
from kombu import Connection, Exchange, Producer

unknown_id, garbage_id = sys.argv[1], sys.argv[2]


def headers(task_id, task):
    return {
        "lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
        "group": None, "retries": 0, "eta": None, "expires": None,
        "timelimit": [None, None], "argsrepr": "()", "kwargsrepr": "{}",
        "origin": "faults-drill",
    }


embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
messages = [
    (unknown_id, "app.tasks.no_such_task", json.dumps([[], {}, embed]).encode()),
    (garbage_id, "app.tasks.process_data", b"\\xff\\xfe{not json"),
]
with Connection(
    os.environ["APP_BROKER_URL"], connect_timeout=10, transport_options={"confirm_publish": True}
) as connection:
    producer = Producer(
        connection.default_channel,
        exchange=Exchange("queuesvc", type="direct", durable=True),
        auto_declare=False,
    )
    for task_id, task, body in messages:
        producer.publish(
            body, routing_key="default", headers=headers(task_id, task),
            content_type="application/json", content_encoding="utf-8", delivery_mode=2,
            correlation_id=task_id, retry=True, retry_policy={"max_retries": 3},
        )
print("published", unknown_id, garbage_id)
"""


def dead_letters(http: httpx.Client) -> tuple[int, dict[str, dict[str, Any]]]:
    """GET /api/async/dead (newest first; every page, if paged): its status code
    and the entries by task id."""
    entries: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    for _ in range(20):
        params: dict[str, str | int] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = http.get("/api/async/dead", params=params)
        if response.status_code != 200:
            return response.status_code, entries
        body = response.json()
        listed: Any = body
        if isinstance(body, dict):
            listed = next((body[k] for k in ("items", "dead", "letters", "tasks") if k in body), [])
        for entry in listed if isinstance(listed, list) else []:
            if isinstance(entry, dict):
                entries[str(entry.get("task_id") or entry.get("id"))] = entry
        cursor = body.get("next_cursor") if isinstance(body, dict) else None
        if not cursor:
            break
    return 200, entries


def wait_dead(
    http: httpx.Client, ids: list[str], timeout: float
) -> tuple[int, dict[str, dict[str, Any]]]:
    """Wait until every id is listed in /api/async/dead; stops at once if the route is missing."""
    deadline = time.monotonic() + timeout
    code, entries = dead_letters(http)
    while time.monotonic() < deadline and code != 404 and not set(ids) <= set(entries):
        time.sleep(1)
        code, entries = dead_letters(http)
    return code, entries


def dead_problems(
    http: httpx.Client, code: int, entries: dict[str, dict[str, Any]], ids: dict[str, str]
) -> list[str]:
    """Each message must be listed dead (FAILURE, a reason) and its status FAILURE with an error."""
    problems = []
    if code != 200:
        problems.append(f"GET /api/async/dead answered {code}")
    for what, task_id in ids.items():
        entry = entries.get(task_id)
        if entry is None:
            problems.append(f"{what} ({task_id}) not in /api/async/dead")
        elif entry.get("status", "FAILURE") != "FAILURE" or not entry.get("reason"):
            problems.append(f"{what} ({task_id}) listed dead without a reason: {entry}")
        status = task_status(http, task_id)
        if status.get("status") != "FAILURE" or not status.get("error"):
            problems.append(f"{what} ({task_id}) status not FAILURE with an error: {status}")
    return problems


def test_poison_messages_are_dead_lettered(drill: Lab) -> None:
    report = Report("poison-messages")
    poison = {"unknown task": str(uuid.uuid4()), "undecodable body": str(uuid.uuid4())}
    # Admin: the dead-letter routes need it, and a message published past the
    # API has no owner, so only admin sees its status.
    with drill.client(admin=True) as http, Load(drill, [submits(), lives()]) as load:
        time.sleep(WARMUP)
        published = time.monotonic()
        drill.app_python("app1", PUBLISH_POISON, poison["unknown task"], poison["undecodable body"])
        code, entries = wait_dead(http, list(poison.values()), timeout=90)
        dead_after = time.monotonic() - published
        report.problems += dead_problems(http, code, entries, poison)
        time.sleep(TAIL)
    ids = load.accepted()
    ledger = settle(drill, ids, SETTLE)
    report.problems += route_problems(load, needs=())
    listed = sum(1 for task_id in poison.values() if task_id in entries)
    report.finish(
        report.tasks(ledger, ids),
        format_routes(load) + ";",
        f"dead={listed}/{len(poison)} in {dead_after:.1f}s (/api/async/dead: {code})",
    )


def test_task_that_keeps_killing_its_worker_is_dead_lettered(drill: Lab) -> None:
    """Each time the task runs, SIGKILL its host's default worker: after RabbitMQ's
    delivery limit it must end FAILURE, listed dead; a replay then runs it to SUCCESS."""
    report = Report("worker-killer")
    kills: list[str] = []
    # Admin: listing and replaying dead letters need it.
    with drill.client(admin=True) as http, Load(drill, [lives(), reads(2)]) as load:
        time.sleep(WARMUP)
        task_id = submit(http, 3000, "drill killer")
        killed = ("", 0)  # worker and progress last seen of the attempt killed last
        armed = True  # the attempt the status shows has not been killed yet
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(kills) < 12:
            status = task_status(http, task_id)
            state = status.get("status")
            if state in FINAL_STATES:
                break
            worker = str(status.get("worker") or "")
            current = int((status.get("progress") or {}).get("current", 0))
            # A new delivery: another worker, progress from the start again, or STARTED.
            if not armed and (worker != killed[0] or current < killed[1] or state == "STARTED"):
                armed = True
            if armed and state == "PROGRESS" and current > 0 and "@" in worker:
                host = worker.split("@", 1)[1]
                drill.kill_unit(host, DEFAULT_WORKER)
                kills.append(host)
                killed, armed = (worker, current), False
            time.sleep(0.1)
        final = wait_final(http, task_id, timeout=120)
        code, entries = wait_dead(http, [task_id], timeout=30)
        report.problems += dead_problems(http, code, entries, {"worker killer": task_id})
        replayed = "not tried"
        if task_id in entries:
            response = http.post(f"/api/async/dead/{task_id}/replay")
            if response.status_code in (200, 201, 202):
                new_id = str(response.json().get("task_id") or task_id)
                replayed = str(wait_final(http, new_id, timeout=120).get("status"))
            else:
                replayed = f"HTTP {response.status_code}"
            report.check(replayed == "SUCCESS", f"the replayed task ended {replayed}")
        time.sleep(TAIL)
    report.check(len(kills) >= 2, f"the task was killed only {len(kills)} times")
    report.problems += route_problems(load, needs=())
    report.finish(
        f"kills={len(kills)} ({','.join(kills)}) final={final.get('status')}"
        f" error={final.get('error')!r} dead={'yes' if task_id in entries else 'no'}"
        f" replay={replayed};",
        format_routes(load),
    )
