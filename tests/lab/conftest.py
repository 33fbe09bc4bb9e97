"""Checks of the lab on this machine (run by `python3 -m scripts.lab`, which
sets QUEUESVC_LAB_TESTS=1 and the tools' environment; skipped otherwise)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest

from scripts.lab import config

Playbook = Callable[..., str]


@pytest.fixture(autouse=True)
def _lab_only() -> None:
    if os.environ.get("QUEUESVC_LAB_TESTS") != "1":
        pytest.skip("lab checks: run through `python3 -m scripts.lab` (QUEUESVC_LAB_TESTS=1)")
    if os.geteuid() != 0:
        pytest.fail("the lab checks run as root")


@pytest.fixture
def playbook() -> Playbook:
    """ansible-playbook over the lab's inventory; returns its output, fails the test on error."""

    def run(path: str, *args: str) -> str:
        command = [
            str(config.TOOLS_VENV / "bin/ansible-playbook"),
            "-i",
            str(config.ROOT / "inventories/vagrant"),
            path,
            *args,
        ]
        done = subprocess.run(
            command, cwd=config.ROOT, capture_output=True, text=True, timeout=1800, check=False
        )
        if done.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
            )
        return done.stdout

    return run


def recap(output: str) -> str:
    return "PLAY RECAP" + output.rsplit("PLAY RECAP", 1)[-1]
