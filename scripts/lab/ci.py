"""The test suite, as CI runs it (`bash scripts/test.sh`, from .ci/run).

Stages, each timed; a failed stage is recorded and the run goes on where the
next stages still mean something:
  services, python-env        install and start what the tests need (idempotent)
  lint                        ruff, ruff format, mypy, yamllint, ansible-lint
  unit-integration            pytest tests/unit tests/integration (real services)
  bench-local                 bench/run.py on loopback: ours, the peer, hello-world,
                              the key check's cost, worker throughput; then
                              bench/flood.py (figures for the log, no verdict)
  in the background from the start (unless QUEUESVC_SKIP_LAB=1):
  prepare-host, tools, box    network guard first, controller tools, images
  molecule                    then every role's scenarios, three at a time
  then the lab, once the box is ready:
  guard-refuses-up            without the guard, `vagrant up` starts nothing;
                              from here a watcher checks the guard every 2 s
  vagrant-up, lab-checks, site-idempotent, data-checks, e2e
  molecule-wait               the drills and benchmarks have the machine alone
  faults, bench-lb
  vagrant-destroy, guard-watch, teardown, host-clean   always, also after a failure
At the end: a table of every stage with its result and time, and
"N passed, N failed".

QUEUESVC_LAB_TIERS=common tests the common role and provisions the lab with
site.yml's common tier only (a quick look); QUEUESVC_MOLECULE_ROLES names the
roles whose scenarios run ("none": skip); QUEUESVC_MOLECULE_JOBS how many at a
time (3); QUEUESVC_BENCH_SWEEP the connection counts of bench-lb's sweep
("64,5000"; "64,1000,5000,10000" for the full one, about 2 minutes more).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from . import box, config, guard, host, lab, molecule, services
from .running import lab_hosts, lab_hosts_running, memory_line, memory_now
from .sh import LabError, log, project_venv, run, succeeds, tools_env, tools_venv


@dataclass
class Stage:
    name: str
    seconds: float
    ok: bool


@dataclass
class Run:
    stages: list[Stage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def stage(self, name: str, step: Callable[[], object]) -> bool:
        log(f"=== {name}")
        started = time.monotonic()
        ok = True
        try:
            step()
        except (LabError, OSError) as error:
            ok = False
            log(f"{name}: {error}")
        except Exception:  # a bug in the harness itself: show it, count it, go on
            ok = False
            traceback.print_exc()
        seconds = time.monotonic() - started
        self.stages.append(Stage(name, seconds, ok))
        log(f"=== {name}: {'ok' if ok else 'FAILED'} ({seconds:.0f}s)")
        return ok

    def report(self, total: float) -> bool:
        failed = [s for s in self.stages if not s.ok]
        width = max(len(s.name) for s in self.stages)
        print("\nstage" + " " * (width - 2) + "result   seconds")
        for s in self.stages:
            print(f"{s.name:<{width}}   {'ok' if s.ok else 'FAILED':<6} {s.seconds:8.0f}")
        print(f"{'total':<{width}}   {'':<6} {total:8.0f}")
        for note in self.notes:
            print(note)
        if failed:
            print("failed stages: " + " ".join(s.name for s in failed))
        print(f"{len(self.stages) - len(failed)} passed, {len(failed)} failed")
        return not failed


class GuardWatch(threading.Thread):
    """Every 2 s while a lab host runs: the guard must be complete; the lab's
    memory is sampled for its peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()
        self.samples = self.peak = 0
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stopping.wait(2):
            running = lab_hosts_running()
            if not running:
                continue
            self.samples += 1
            problems = guard.problems()
            if problems:
                self.violations.append(f"{time.strftime('%T')} {'; '.join(problems)} while up")
            self.peak = max(self.peak, memory_now())

    def verdict(self) -> str:
        self.stopping.set()
        self.join()
        for violation in self.violations:
            log(f"guard watch: {violation}")
        line = (
            f"samples={self.samples} violations={len(self.violations)} "
            f"lab_memory_peak_mb={self.peak >> 20}"
        )
        if self.violations or not self.samples:
            raise LabError(f"the guard watch failed: {line}")
        return line


def lint() -> None:
    venv, tools = config.VENV / "bin", config.TOOLS_VENV / "bin"
    run([venv / "ruff", "check", "."], cwd=config.ROOT)
    run([venv / "ruff", "format", "--check", "."], cwd=config.ROOT)
    run([venv / "mypy"], cwd=config.ROOT)
    run([tools / "yamllint", "--strict", "."], cwd=config.ROOT)
    run([tools / "ansible-lint"], env=tools_env(), cwd=config.ROOT)


def service_tests() -> None:
    run(
        [
            config.VENV / "bin/pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-ra",
            "--durations=5",
            "tests/unit",
            "tests/integration",
        ],
        cwd=config.ROOT,
    )


def bench_local() -> None:
    """The submit path against the tutorial pattern and hello-world on loopback
    (bench/run.py, short rounds), the key check's cost and the worker
    throughput; then a flood of one key's submits next to another key's calm
    ones (bench/flood.py, about 30 s): figures and ratios for the log. A
    failed target is reported, not a failed stage; the stage fails only if a
    benchmark cannot run."""
    python = str(config.VENV / "bin/python")
    bench = [python, "bench/run.py", "--duration", "4", "--runs", "2", "--tasks", "300"]
    run(bench, cwd=config.ROOT)
    run([python, "bench/flood.py"], cwd=config.ROOT)


def bench_through_lb1() -> None:
    """The service's benchmark against the lab's load balancer (bench/run.py),
    then a bounded concurrency sweep (64 and 5,000 connections unless
    QUEUESVC_BENCH_SWEEP says otherwise, 10 s each) whose table of goodput and
    errors by kind goes to the log. 10 s, not less: thousands of connections
    spend their first seconds in TLS handshakes on this shared machine, and a
    4 s run at 5,000 measured nothing else (no answer, no error). Every
    request carries the lab's demo key (a tenant's); no route measured needs
    the admin key."""
    bench = [str(config.VENV / "bin/python"), "bench/run.py", "--url", config.LB_URL]
    sweep = os.environ.get("QUEUESVC_BENCH_SWEEP", "64,5000")
    keyed = {"QUEUESVC_BENCH_KEY": config.lab_api_key("demo")}
    run([*bench, "--duration", "8", "--runs", "1"], env=keyed, cwd=config.ROOT)
    run([*bench, "--sweep", sweep, "--duration", "10", "--runs", "1"], env=keyed, cwd=config.ROOT)


def molecule_roles() -> list[str] | None:
    """The roles whose scenarios run; None: skip."""
    chosen = os.environ.get("QUEUESVC_MOLECULE_ROLES")
    if chosen == "none":
        return None
    if chosen:
        return chosen.split()
    return ["common"] if lab.lab_tiers() == "common" else []


def main() -> int:
    started = time.monotonic()
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    ci = Run()
    background = Background(ci, molecule_roles())
    if not os.environ.get("QUEUESVC_SKIP_LAB"):
        background.start()
    ci.stage("services", services.start)
    ci.stage("python-env", lambda: (project_venv(), tools_venv()))
    background.tools_ready.set()
    ci.stage("lint", lint)
    ci.stage("unit-integration", service_tests)
    ci.stage("bench-local", bench_local)
    if background.is_alive() or background.ready.is_set():
        lab_part(ci, background)
    return 0 if ci.report(time.monotonic() - started) else 1


class Background(threading.Thread):
    """The host's preparation and the images (mostly waiting on the network
    and the disk), then the roles' molecule scenarios (mostly waiting on apt
    and systemd): they run while the service's stages and the lab's first
    stages do. `ready` is set once the lab can start (`lab_ready` says whether
    it may); the drills and benchmarks that measure time wait for the end."""

    def __init__(self, ci: Run, roles: list[str] | None) -> None:
        super().__init__(daemon=True)
        self.ci = ci
        self.roles = roles
        self.ready = threading.Event()
        self.lab_ready = False
        self.tools_ready = threading.Event()  # molecule runs from the tools' venv

    def run(self) -> None:
        try:
            self.lab_ready = prepare_lab(self.ci)
        finally:
            self.ready.set()
        if self.lab_ready and self.roles is not None:
            self.tools_ready.wait()
            roles = self.roles
            jobs = int(os.environ.get("QUEUESVC_MOLECULE_JOBS", "3"))
            self.ci.stage("molecule", lambda: molecule.run(roles, jobs=jobs))


def prepare_lab(ci: Run) -> bool:
    """One lab per machine: what an earlier run or another checkout left goes
    first; then the host's preparation (the network guard first) and the images."""
    if lab_hosts() or succeeds(["nft", "list", "table", "inet", config.GUARD_TABLE]):
        log("leftovers of an earlier lab found: tearing down first")
        ci.stage("teardown-leftovers", host.teardown)
    return ci.stage("prepare-host", host.prepare) and ci.stage(
        "box", lambda: ci.notes.extend(f"box: {line}" for line in box.build())
    )


def lab_part(ci: Run, background: Background) -> None:
    background.ready.wait()
    roles = background.roles
    watch = GuardWatch()
    try:
        if not background.lab_ready:
            return
        watch.start()
        if not ci.stage("guard-refuses-up", lab.guard_refuses_up):
            return
        if not ci.stage("vagrant-up", lab.vagrant_up):
            return

        def lab_checks() -> None:
            lab.lab_pytest("tests/lab/test_running_lab.py")
            ci.notes.append(f"lab memory: {memory_line()}")

        ci.stage("lab-checks", lab_checks)
        ci.stage("site-idempotent", lambda: lab.lab_pytest("tests/lab/test_site_idempotent.py"))
        if lab.lab_tiers() == "all":
            ci.stage("data-checks", lambda: lab.lab_pytest("tests/lab/test_data_tier.py"))
            ci.stage("e2e", lambda: lab.lab_pytest("tests/e2e"))
            # What measures time (recovery within seconds, latencies) has the
            # machine to itself: molecule ends first.
            ci.stage("molecule-wait", background.join)
            ci.stage("faults", lambda: lab.lab_pytest("tests/faults"))
            ci.stage("bench-lb", bench_through_lb1)
    finally:
        ci.stage("vagrant-destroy", lab.vagrant_destroy)
        if watch.is_alive():
            ci.stage("guard-watch", lambda: ci.notes.append(f"guard watch: {watch.verdict()}"))
        # The teardown takes the molecule network and the guard away: molecule ends first.
        background.join()
        ci.stage("teardown", host.teardown)
        ran = [] if roles is None else molecule.scenarios(roles, None, "test")
        own = molecule.container_names(ran)

        def clean() -> None:
            left = host.leftovers(own)
            if left:
                raise LabError("left after teardown: " + ", ".join(left))

        ci.stage("host-clean", clean)
