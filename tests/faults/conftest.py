"""Fault drills against a deployed lab (run by `python3 -m scripts.lab test` after tests/e2e).

Same settings as tests/e2e (QUEUESVC_E2E_URL, QUEUESVC_E2E_VERIFY, ...); the
drills also inject faults from this machine with lxc-attach, lxc-stop and
lxc-start, so they need root and the lab's lxc containers here. Without
QUEUESVC_E2E_URL they skip; with it set and CI=true they never skip (a missing
prerequisite fails instead).

  QUEUESVC_LAB_LOCK           the lab's lock file (/tmp/queuesvc-lab.lock): each
                              drill holds it, as does anyone changing the lab
  QUEUESVC_FAULTS_LOCK_WAIT   seconds to wait for that lock (1800)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import REPO, _verify
from tests.faults.drill import CONTAINER_PREFIX, HOSTS, Lab

FIGURES: list[str] = []
LOCK_PATH = os.environ.get("QUEUESVC_LAB_LOCK", "/tmp/queuesvc-lab.lock")


def record(line: str) -> None:
    """A drill's line of figures, printed at the end of the run (and now)."""
    FIGURES.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("fault drills")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (lxc-attach, lxc-stop)")
    for tool in ("lxc-attach", "lxc-stop", "lxc-start", "lxc-info"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not missing:
        for host in HOSTS:
            name = CONTAINER_PREFIX + host
            # Stopped is fine (a drill starts it again); missing is not.
            state = subprocess.run(
                ["lxc-info", "-s", "-n", name],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if state.returncode != 0 or "State:" not in state.stdout:
                missing.append(f"the lxc container {name}")
    return missing


@pytest.fixture(scope="session")
def lab() -> Lab:
    url = os.environ.get("QUEUESVC_E2E_URL")
    if not url:
        pytest.skip(
            "no deployed lab: QUEUESVC_E2E_URL is not set (python3 -m scripts.lab runs these)"
        )
    missing = _missing_prerequisites()
    if missing:
        reason = "fault drills need " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true with QUEUESVC_E2E_URL set: not skipped)")
        pytest.skip(reason)
    settings = {"verify": os.environ.get("QUEUESVC_E2E_VERIFY", "yes")}
    keys = {
        name: os.environ.get(f"QUEUESVC_E2E_{name.upper()}", "") for name in ("key", "admin_key")
    }
    if not all(keys.values()):
        pytest.fail("QUEUESVC_E2E_KEY and QUEUESVC_E2E_ADMIN_KEY: the lab's API keys are not set")
    return Lab(
        **keys,
        url=url.rstrip("/"),
        verify=_verify(settings),
        inventory=os.environ.get("QUEUESVC_E2E_INVENTORY", str(REPO / "inventories/vagrant")),
        ansible_bin=os.environ.get("QUEUESVC_ANSIBLE_BIN", str(REPO / ".venv-ansible/bin")),
    )


@pytest.fixture
def drill(lab: Lab) -> Iterator[Lab]:
    """The lab, locked for this drill, healthy before it starts and after it ends.

    The lock is the lab's (QUEUESVC_LAB_LOCK): people changing the lab take it
    with `flock`, so a drill never runs while someone deploys, and the reverse.
    """
    wait = float(os.environ.get("QUEUESVC_FAULTS_LOCK_WAIT", "1800"))
    with open(LOCK_PATH, "a") as handle:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started > wait:
                    pytest.fail(f"the lab's lock {LOCK_PATH} was held for more than {wait:.0f} s")
                time.sleep(1)
        try:
            lab.restore_all()
            lab.wait_healthy(180)
            lab.introduce_key()
            yield lab
            lab.restore_all()
            lab.wait_healthy(180)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
