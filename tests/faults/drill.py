"""What the fault drills are made of: the lab's parts and how to break them, a
bounded load through the load balancer, and the ledger of accepted tasks.

Faults are injected from this machine into the lab's lxc containers
(`lxc-attach -n queuesvc-<host> -- systemctl ...`, `lxc-stop -k`, `lxc-start`);
traffic goes only to the load balancer's URL (a lab address). Everything here
is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

HOSTS = {
    "lb1": "192.168.56.10",
    "app1": "192.168.56.21",
    "app2": "192.168.56.22",
    "app3": "192.168.56.23",
    "mq1": "192.168.56.31",
    "cache1": "192.168.56.41",
    "db1": "192.168.56.51",
}
APP_HOSTS = ("app1", "app2", "app3")
CONTAINER_PREFIX = "queuesvc-"
API_PORT = 8000
# roles/app: app_root, app_config_dir; the units in systemd/.
APP_PYTHON = "/opt/queuesvc/current/venv/bin/python"
APP_ENV_FILE = "/etc/queuesvc/queuesvc.env"
API_UNIT = "queuesvc-api.service"
DEFAULT_WORKER = "queuesvc-worker@default.service"
IMPORTS_WORKER = "queuesvc-worker@imports.service"
APP_UNITS = (API_UNIT, DEFAULT_WORKER, IMPORTS_WORKER)
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
RUNNING_STATES = frozenset({"STARTED", "PROGRESS"})
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Part:
    """A service of the data tier: its host, its systemd unit and the port it serves."""

    name: str
    host: str
    unit: str
    port: int


RABBITMQ = Part("rabbitmq", "mq1", "rabbitmq-server.service", 5672)
REDIS = Part("redis", "cache1", "redis-server.service", 6379)
# roles/mongodb: mongodb_emulator_service (the lab runs the emulator engine).
MONGODB = Part("mongodb", "db1", "mongoeco.service", 27017)
DATA_PARTS = (RABBITMQ, REDIS, MONGODB)


class LabError(AssertionError):
    """A command against the lab failed."""


def poll_until(ready: Callable[[], bool], timeout: float, interval: float) -> float | None:
    """Call `ready` every `interval` seconds until it is true; returns that instant
    (time.monotonic), or None once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return time.monotonic()
        time.sleep(interval)
    return None


@dataclass
class Lab:
    """The deployed lab: its load balancer's URL and its lxc containers."""

    url: str
    verify: bool | str
    inventory: str
    ansible_bin: str
    key: str  # a tenant's API key: the load's requests
    admin_key: str  # /health through lb1

    def client(self, timeout: float = 15, admin: bool = False) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=self.verify,
            timeout=timeout,
            headers=self.headers(admin),
        )

    def headers(self, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key if admin else self.key}"}

    # --- commands in the containers --------------------------------------------------

    @staticmethod
    def attach_argv(host: str, *command: str) -> list[str]:
        """The command line that runs `command` in a lab host's container (as root there)."""
        return [
            "lxc-attach",
            "-n",
            CONTAINER_PREFIX + host,
            "--clear-env",
            "--set-var",
            f"PATH={PATH}",
            "--",
            *command,
        ]

    def attach(
        self, host: str, *command: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a lab host's container (as root there)."""
        argv = self.attach_argv(host, *command)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise LabError(
                f"{' '.join(argv)}: rc={result.returncode}\n{result.stdout[-2000:]}"
                f"\n{result.stderr[-2000:]}"
            )
        return result

    def systemctl(self, host: str, *args: str, timeout: float = 120) -> str:
        return self.attach(host, "systemctl", *args, timeout=timeout).stdout

    def unit(self, host: str, unit: str) -> dict[str, str]:
        """ActiveState, SubState, MainPID and NRestarts of a unit."""
        out = self.attach(
            host,
            "systemctl",
            "show",
            "-p",
            "ActiveState",
            "-p",
            "SubState",
            "-p",
            "MainPID",
            "-p",
            "NRestarts",
            unit,
            timeout=30,
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def active(self, host: str, *units: str) -> dict[str, bool]:
        result = self.attach(host, "systemctl", "is-active", *units, timeout=30, check=False)
        states = result.stdout.split()
        return {unit: state == "active" for unit, state in zip(units, states, strict=False)}

    def port_open(self, part: Part) -> bool:
        """Whether the part's port accepts a connection on its host's lab address."""
        probe = f"exec 3<>/dev/tcp/{HOSTS[part.host]}/{part.port}"
        return self.attach(part.host, "bash", "-c", probe, timeout=30, check=False).returncode == 0

    def stop(self, part: Part) -> None:
        self.systemctl(part.host, "stop", part.unit)

    def start(self, part: Part) -> None:
        self.systemctl(part.host, "reset-failed", part.unit)
        self.systemctl(part.host, "start", part.unit)

    def wait_back(self, part: Part, timeout: float = 120) -> float:
        """Wait until the part's unit is active and its port open; returns that instant."""
        back = poll_until(
            lambda: bool(self.active(part.host, part.unit).get(part.unit)) and self.port_open(part),
            timeout,
            0.1,
        )
        if back is None:
            raise LabError(f"{part.unit} on {part.host} not back within {timeout:.0f} s")
        return back

    def kill_unit(self, host: str, unit: str) -> None:
        """SIGKILL every process of a unit (systemd restarts it: Restart=on-failure)."""
        self.systemctl(host, "kill", "--signal=SIGKILL", unit)

    def pool_processes(self, host: str, unit: str = DEFAULT_WORKER) -> tuple[int, list[int]]:
        """The Celery main process of a worker unit and its pool processes."""
        main = int(self.unit(host, unit).get("MainPID", "0"))
        script = (
            "import os, sys\n"
            "main = sys.argv[1]\n"
            "for pid in os.listdir('/proc'):\n"
            "    if pid.isdigit():\n"
            "        try:\n"
            "            stat = open(f'/proc/{pid}/stat').read()\n"
            "        except OSError:\n"
            "            continue\n"
            "        if stat.rsplit(')', 1)[1].split()[1] == main:\n"
            "            print(pid)\n"
        )
        out = self.attach(host, "python3", "-c", script, str(main), timeout=30).stdout
        return main, sorted(int(pid) for pid in out.split())

    def kill_pid(self, host: str, pid: int) -> None:
        self.attach(host, "kill", "-KILL", str(pid), timeout=30)

    # --- power -----------------------------------------------------------------------------

    def container_running(self, host: str) -> bool:
        out = subprocess.run(
            ["lxc-info", "-s", "-n", CONTAINER_PREFIX + host],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        return "RUNNING" in out

    def power_off(self, host: str) -> None:
        subprocess.run(
            ["lxc-stop", "-k", "-n", CONTAINER_PREFIX + host],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    def power_on(self, host: str) -> None:
        if not self.container_running(host):
            subprocess.run(
                ["lxc-start", "-n", CONTAINER_PREFIX + host],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )

    def wait_units(self, host: str, units: Iterable[str], timeout: float = 180) -> float:
        """Wait until a host answers lxc-attach and every unit is active; returns that instant."""
        units = tuple(units)
        last: dict[str, bool] = {}

        def all_active() -> bool:
            nonlocal last
            if not self.container_running(host):
                return False
            last = self.active(host, *units)
            return len(last) == len(units) and all(last.values())

        active = poll_until(all_active, timeout, 0.2)
        if active is None:
            raise LabError(f"{host}: units not active within {timeout:.0f} s: {last}")
        return active

    def api_answers(self, host: str) -> bool:
        """Whether the host's API answers /health/live on its lab address (from the host)."""
        probe = (
            "import sys, urllib.request\n"
            "with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:\n"
            "    sys.exit(0 if answer.status == 200 else 1)\n"
        )
        url = f"http://{HOSTS[host]}:{API_PORT}/health/live"
        answered = self.attach(host, "python3", "-c", probe, url, timeout=30, check=False)
        return answered.returncode == 0

    def wait_api(self, host: str, timeout: float = 180) -> float:
        """Wait until the host's app units are active and its API answers (its
        gunicorn workers booted, not only the arbiter); returns that instant."""
        started = time.monotonic()
        self.wait_units(host, APP_UNITS, timeout=timeout)
        left = timeout - (time.monotonic() - started)
        answering = poll_until(lambda: self.api_answers(host), left, 0.2)
        if answering is None:
            raise LabError(f"{host}: the API does not answer within {timeout:.0f} s")
        return answering

    # --- the whole lab ---------------------------------------------------------------------

    def restore_all(self) -> None:
        """Whatever a drill broke, running again: containers, data services, app units."""
        for host in HOSTS:
            self.power_on(host)
        for host in HOSTS:
            self.wait_units(host, ["multi-user.target"], timeout=180)
        for part in DATA_PARTS:
            if not self.active(part.host, part.unit).get(part.unit):
                self.start(part)
        for host in APP_HOSTS:
            for unit, up in self.active(host, *APP_UNITS).items():
                if not up:
                    self.systemctl(host, "reset-failed", unit)
                    self.systemctl(host, "start", unit)

    def health(self) -> tuple[int, Any]:
        with self.client(timeout=10, admin=True) as http:
            response = http.get("/health")
            try:
                return response.status_code, response.json()
            except ValueError:
                return response.status_code, response.text

    def introduce_key(self, requests: int = 60, at_once: int = 20) -> None:
        """Every API process checks the tenant's key once before a fault: a
        process keeps a key it has checked while MongoDB is away, but one that
        has never seen it must ask MongoDB (README, Access). Concurrent, so
        lb1 opens connections to every API process, not one kept-alive each."""

        async def send() -> None:
            limits = httpx.Limits(max_connections=at_once)
            async with httpx.AsyncClient(
                base_url=self.url,
                verify=self.verify,
                timeout=15,
                headers=self.headers(),
                limits=limits,
            ) as http:
                answers = await asyncio.gather(
                    *(http.get("/api/items?limit=1") for _ in range(requests))
                )
            refused = [r.status_code for r in answers if r.status_code != 200]
            if refused:
                raise LabError(f"the tenant's key was refused before the drill: {refused}")

        asyncio.run(send())

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                code, body = self.health()
                if code == 200 and isinstance(body, dict) and body.get("status") == "healthy":
                    return
                last = (code, body)
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(1)
        raise LabError(f"/health through the load balancer not healthy in {timeout:.0f} s: {last}")

    def queue_depths(self, vhost: str = "queuesvc") -> dict[str, int]:
        """Messages in each of RabbitMQ's queues (rabbitmqctl on mq1)."""
        out = self.attach(
            RABBITMQ.host,
            "rabbitmqctl",
            "-q",
            "--no-table-headers",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages",
            timeout=60,
        ).stdout
        depths = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths

    def app_python(self, host: str, script: str, *args: str, timeout: float = 120) -> str:
        """Run Python on an app server with the release's virtualenv and the app's settings."""
        shell = f'set -a; . {APP_ENV_FILE}; set +a; exec {APP_PYTHON} -c "$1" "${{@:2}}"'
        return self.attach(
            host, "bash", "-c", shell, "drill", script, *args, timeout=timeout
        ).stdout


# --- load through the load balancer ----------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """One route under load: `rate` requests a second, open loop (not waiting for answers)."""

    route: str
    method: str
    path: str
    rate: float
    body: Callable[[int], dict[str, Any]] | None = None


def submits(rate: float = 6, iterations: int = 20) -> Stream:
    return Stream(
        "submit",
        "POST",
        "/api/async/process",
        rate,
        lambda n: {"data": f"drill {n}", "iterations": iterations},
    )


def lives(rate: float = 5) -> Stream:
    return Stream("live", "GET", "/health/live", rate)


def reads(rate: float = 3) -> Stream:
    return Stream("items", "GET", "/api/items?limit=5", rate)


@dataclass(frozen=True)
class Outcome:
    route: str
    sent: float
    received: float
    status: int  # 0: no HTTP answer (see error)
    error: str
    clean: bool  # a 503 the way the API answers one: JSON with a detail, and Retry-After
    upstream: str  # the app server that answered (nginx's X-Upstream, its last entry)
    task_id: str | None
    detail: str


def outcome_key(outcome: Outcome) -> str:
    if outcome.status == 0:
        return outcome.error
    if 200 <= outcome.status < 300:
        return "2xx"
    if outcome.status == 503:
        return "503" if outcome.clean else "503-unclean"
    return str(outcome.status)


# Counted apart, as in tests/e2e: a kept-alive connection nginx closed before
# answering (its reload); nginx never read that request, so it is sent again.
CLOSED_BEFORE_ANSWER = "without sending a response"


class Load:
    """Bounded load through the load balancer: each stream at its own rate, for
    at most `max_seconds`, at most `max_in_flight` requests open per stream.
    Every answer is kept (route, times, status, whether a 503 was clean, the
    app server that answered, the task id of a 202)."""

    def __init__(
        self,
        lab: Lab,
        streams: Iterable[Stream],
        *,
        max_seconds: float = 300,
        max_in_flight: int = 32,
    ) -> None:
        self.lab = lab
        self.streams = tuple(streams)
        self.max_seconds = max_seconds
        self.max_in_flight = max_in_flight
        self.outcomes: list[Outcome] = []
        self.skipped: Counter[str] = Counter()
        self.resent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-load", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the drill
            self.error = exc

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=32)
        async with httpx.AsyncClient(
            base_url=self.lab.url,
            verify=self.lab.verify,
            timeout=10,
            limits=limits,
            headers=self.lab.headers(),
        ) as http:
            await asyncio.gather(*(self._stream(http, stream) for stream in self.streams))

    async def _stream(self, http: httpx.AsyncClient, stream: Stream) -> None:
        pending: set[asyncio.Task[None]] = set()
        interval = 1.0 / stream.rate
        end = time.monotonic() + self.max_seconds
        tick = time.monotonic()
        n = 0
        while not self._stop.is_set() and time.monotonic() < end:
            if len(pending) < self.max_in_flight:
                task = asyncio.create_task(self._send(http, stream, n))
                pending.add(task)
                task.add_done_callback(pending.discard)
            else:
                self.skipped[stream.route] += 1
            n += 1
            tick += interval
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        if pending:
            await asyncio.gather(*list(pending))

    async def _send(self, http: httpx.AsyncClient, stream: Stream, n: int) -> None:
        body = stream.body(n) if stream.body else None
        sent = time.monotonic()
        try:
            try:
                response = await http.request(stream.method, stream.path, json=body)
            except httpx.RemoteProtocolError as exc:
                if CLOSED_BEFORE_ANSWER not in str(exc):
                    raise
                with self._lock:
                    self.resent += 1
                response = await http.request(stream.method, stream.path, json=body)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
            self._keep(
                Outcome(stream.route, sent, time.monotonic(), 0, error, False, "", None, str(exc))
            )
            return
        received = time.monotonic()
        try:
            payload: Any = response.json()
        except ValueError:
            payload = None
        detail = payload.get("detail") if isinstance(payload, dict) else None
        clean = (
            response.status_code == 503
            and isinstance(detail, str)
            and bool(detail)
            and "retry-after" in response.headers
        )
        task_id = None
        if response.status_code == 202 and isinstance(payload, dict):
            task_id = str(payload.get("task_id") or "") or None
        upstream = response.headers.get("x-upstream", "").split(",")[-1].strip()
        text = detail if isinstance(detail, str) else response.text[:200]
        self._keep(
            Outcome(
                route=stream.route,
                sent=sent,
                received=received,
                status=response.status_code,
                error="",
                clean=clean,
                upstream=upstream,
                task_id=task_id,
                detail=text,
            )
        )

    def _keep(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def accepted(self) -> list[str]:
        return [o.task_id for o in self.snapshot() if o.task_id]

    def first_ok(
        self, route: str | None, after: float, upstream: str | None = None
    ) -> float | None:
        """When the first 2xx answered a request on `route` (None: any route) sent
        at or after `after` (by `upstream`, when given)."""
        times = [
            o.received
            for o in self.snapshot()
            if (route is None or o.route == route)
            and o.sent >= after
            and 200 <= o.status < 300
            and (upstream is None or o.upstream == upstream)
        ]
        return min(times) if times else None

    def wait_ok(
        self, route: str | None, after: float, timeout: float = 30, upstream: str | None = None
    ) -> float | None:
        """Seconds from `after` to the first 2xx on `route` (None: not within `timeout`)."""
        deadline = after + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            first = self.first_ok(route, after, upstream)
            if first is not None:
                return first - after
            time.sleep(0.1)
        first = self.first_ok(route, after, upstream)
        return None if first is None else first - after

    def tallies(self) -> dict[str, Counter[str]]:
        counts: dict[str, Counter[str]] = {s.route: Counter() for s in self.streams}
        for outcome in self.snapshot():
            counts[outcome.route][outcome_key(outcome)] += 1
        return counts

    def samples(self) -> dict[tuple[str, str], str]:
        """One answer's detail for each route and kind of failure."""
        found: dict[tuple[str, str], str] = {}
        for outcome in self.snapshot():
            key = (outcome.route, outcome_key(outcome))
            if key[1] != "2xx" and key not in found:
                found[key] = f"{outcome.detail} (via {outcome.upstream or 'no upstream'})"
        return found


def route_problems(load: Load, needs: Iterable[str]) -> list[str]:
    """Every drill's rule: no non-2xx on a route that does not need the failed part
    (it must keep serving), only clean 503s on one that does (clients can retry)."""
    needed = set(needs)
    problems = []
    samples = load.samples()
    for route, counts in load.tallies().items():
        allowed = {"2xx", "503"} if route in needed else {"2xx"}
        bad = {key: n for key, n in counts.items() if key not in allowed}
        if bad:
            what = "needs the failed part: clean 503s only" if route in needed else "not needed"
            examples = {key: samples.get((route, key), "") for key in bad}
            problems.append(f"{route} ({what}): {bad}; e.g. {examples}")
    if load.error is not None:
        problems.append(f"the load driver failed: {load.error!r}")
    return problems


def format_routes(load: Load) -> str:
    parts = []
    for route, counts in load.tallies().items():
        other = {key: n for key, n in counts.items() if key not in ("2xx", "503")}
        text = f"{route}: 2xx={counts['2xx']}"
        if counts["503"] or route == "submit":
            text += f" 503={counts['503']}"
        text += f" other={sum(other.values())}" + (f" {dict(other)}" if other else "")
        parts.append(text)
    return "; ".join(parts)


# --- the accepted tasks ------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every accepted task's last status and stored result, once they settled."""

    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def lost(self) -> list[str]:
        return [i for i, s in self.statuses.items() if s.get("status") != "SUCCESS"]

    @property
    def stored(self) -> list[str]:
        """Lost tasks whose outcome MongoDB has: the status lost track of it."""
        return [i for i in self.lost if self.results.get(i, {}).get("status") in FINAL_STATES]

    @property
    def split(self) -> list[str]:
        """Tasks whose status and stored result disagree on the outcome."""
        bad = []
        for task_id, status in self.statuses.items():
            if status.get("status") not in FINAL_STATES:
                continue
            if self.results.get(task_id, {}).get("status") != status.get("status"):
                bad.append(task_id)
        return bad

    @property
    def reruns(self) -> int:
        """Tasks whose status and stored result name different workers: run twice."""
        return sum(
            1
            for task_id, status in self.statuses.items()
            if status.get("status") == "SUCCESS"
            and self.results.get(task_id, {}).get("worker") not in (None, status.get("worker"))
        )

    def finished_after(self, wall: float, hosts: Iterable[str] | None = None) -> float | None:
        """Seconds from `wall` (time.time()) to the first result stored after it,
        by a worker on one of `hosts` (any host: None)."""
        wanted = set(hosts) if hosts is not None else None
        best: float | None = None
        for result in self.results.values():
            stamp = result.get("finished_at")
            worker = str(result.get("worker") or "")
            if not stamp or result.get("status") != "SUCCESS":
                continue
            if wanted is not None and worker.split("@")[-1] not in wanted:
                continue
            at = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
            if at >= wall and (best is None or at < best):
                best = at
        return None if best is None else best - wall

    def describe(self, ids: Iterable[str], limit: int = 10) -> str:
        lines = []
        for task_id in list(ids)[:limit]:
            s = self.statuses.get(task_id, {})
            r = self.results.get(task_id, {})
            lines.append(
                f"{task_id}: status={s.get('status')} worker={s.get('worker')} "
                f"retries={s.get('retries')} error={s.get('error')!r} "
                f"progress={s.get('progress')} result={r.get('status')}/{r.get('worker')}"
            )
        return "\n".join(lines)


async def _settle(lab: Lab, ids: list[str], seconds: float) -> Ledger:
    ledger = Ledger()
    started = time.monotonic()
    deadline = started + seconds
    gate = asyncio.Semaphore(12)
    async with httpx.AsyncClient(
        base_url=lab.url, verify=lab.verify, timeout=15, headers=lab.headers()
    ) as http:

        async def get(path: str) -> dict[str, Any]:
            async with gate:
                try:
                    response = await http.get(path)
                except httpx.HTTPError as exc:
                    return {"status": f"no answer: {type(exc).__name__}"}
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code != 200 or not isinstance(body, dict):
                return {"status": f"HTTP {response.status_code}", "detail": body}
            return body

        async def poll(task_id: str) -> None:
            ledger.statuses[task_id] = await get(f"/api/async/status/{task_id}")

        async def fetch(task_id: str) -> None:
            ledger.results[task_id] = await get(f"/api/async/result/{task_id}")

        def unsettled(task_id: str) -> bool:
            if ledger.statuses[task_id].get("status") in FINAL_STATES:
                return False
            # Its outcome is stored while its status says otherwise: waiting is no use.
            return ledger.results.get(task_id, {}).get("status") not in FINAL_STATES

        pending = list(dict.fromkeys(ids))
        look_at_results = started + 20
        while pending:
            await asyncio.gather(*(poll(task_id) for task_id in pending))
            pending = [i for i in pending if unsettled(i)]
            if not pending or time.monotonic() > deadline:
                break
            if time.monotonic() > look_at_results:
                await asyncio.gather(*(fetch(task_id) for task_id in pending))
                # A status read before its result may predate the outcome: read it
                # again, so only a status that still disagrees counts.
                finished = [i for i in pending if ledger.results[i].get("status") in FINAL_STATES]
                await asyncio.gather(*(poll(task_id) for task_id in finished))
                pending = [i for i in pending if unsettled(i)]
                look_at_results = time.monotonic() + 10
            await asyncio.sleep(1)
        ledger.seconds = time.monotonic() - started
        await asyncio.gather(*(fetch(task_id) for task_id in ledger.statuses))
    return ledger


def settle(lab: Lab, ids: Iterable[str], timeout: float = 150) -> Ledger:
    """Poll every task until it is final (at most `timeout` s; a task whose result
    is stored while its status says otherwise stops being waited for), then read
    every task's stored result."""
    return asyncio.run(_settle(lab, list(ids), timeout))


def task_status(http: httpx.Client, task_id: str) -> dict[str, Any]:
    response = http.get(f"/api/async/status/{task_id}")
    if response.status_code != 200:
        return {"status": f"HTTP {response.status_code}", "detail": response.text[:200]}
    body: dict[str, Any] = response.json()
    return body


def wait_final(http: httpx.Client, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status = task_status(http, task_id)
    while status.get("status") not in FINAL_STATES and time.monotonic() < deadline:
        time.sleep(0.5)
        status = task_status(http, task_id)
    return status


def submit(http: httpx.Client, iterations: int, data: str = "drill") -> str:
    response = http.post("/api/async/process", json={"data": data, "iterations": iterations})
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def count_items(http: httpx.Client, prefix: str, limit_pages: int = 200) -> tuple[int, int]:
    """Items whose name starts with `prefix` (every page): (items, distinct external ids)."""
    total = 0
    external: set[str] = set()
    cursor: str | None = None
    for _ in range(limit_pages):
        params: dict[str, str | int] = {"name_prefix": prefix, "limit": 100}
        if cursor:
            params["cursor"] = cursor
        response = http.get("/api/items", params=params, timeout=60)
        assert response.status_code == 200, response.text
        page = response.json()
        total += len(page["items"])
        external.update(str(item.get("external_id")) for item in page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return total, len(external)


def delete_items(http: httpx.Client, prefix: str, seconds: float = 90) -> int:
    """Delete the items whose name starts with `prefix` (at most `seconds`); returns how many."""
    deadline = time.monotonic() + seconds
    deleted = 0
    while time.monotonic() < deadline:
        response = http.get("/api/items", params={"name_prefix": prefix, "limit": 100}, timeout=60)
        if response.status_code != 200 or not response.json()["items"]:
            break
        for item in response.json()["items"]:
            if time.monotonic() > deadline:
                break
            if http.delete(f"/api/items/{item['id']}").status_code == 204:
                deleted += 1
    return deleted


def fmt_seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}s"
