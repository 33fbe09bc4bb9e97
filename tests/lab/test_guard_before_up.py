"""Without the network guard, `vagrant up` must refuse to start a lab host."""

from __future__ import annotations

import os
import subprocess

from scripts.lab import config, guard
from scripts.lab.running import lab_hosts, lab_hosts_running


def test_vagrant_up_refuses_to_start_a_host_without_the_guard() -> None:
    assert not lab_hosts_running(), "lab hosts are already running"
    # The real guard stays up (molecule runs of other checkouts may rely on
    # it): the Vagrantfile's trigger is pointed at a table that does not exist.
    env = {**os.environ, "QUEUESVC_GUARD_TABLE": f"{config.SLUG}_guard_absent"}
    done = subprocess.run(
        ["vagrant", "up", "lb1", "--provider=lxc"],
        cwd=config.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert guard.problems() == [], "the real guard must still be complete"
    assert done.returncode != 0, "vagrant up started a host without the network guard"
    assert not lab_hosts(), "a lab host exists after the refused vagrant up"
    assert "network guard missing" in done.stdout + done.stderr, done.stdout[-3000:]
