"""Checks of a lab that is up: the guard holds (and cannot be dropped while a
host runs), then ansible/lab-check.yml (SSH, systemd, failed units, names,
firewall) over every host."""

from __future__ import annotations

import pytest

from scripts.lab import guard
from scripts.lab.running import lab_hosts_running, memory_line
from scripts.lab.sh import LabError

from .conftest import Playbook, recap


def test_the_guard_is_complete_while_hosts_run() -> None:
    assert lab_hosts_running(), "no lab host is running"
    assert guard.problems() == []


def test_the_guard_cannot_be_removed_while_hosts_run() -> None:
    try:
        guard.remove()
    except LabError as refused:
        message = str(refused)
    else:
        guard.apply()
        pytest.fail("the guard was removed while lab hosts run (applied again)")
    assert "lab hosts still running" in message
    assert guard.problems() == []


def test_every_host_passes_the_lab_check_playbook(playbook: Playbook) -> None:
    print(recap(playbook("ansible/lab-check.yml")))
    print(memory_line())
