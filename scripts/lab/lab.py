"""The seven-host lab: up (host preparation with the network guard first, the
controller's tools, the box, `vagrant up --provider=lxc`, its checks) and down.

QUEUESVC_APP_COUNT and QUEUESVC_MEMORY_MB: see the Vagrantfile.
"""

from __future__ import annotations

import os
import time

from . import box, config, host
from .sh import die, log, need_root, project_venv, run, run_logged, tools_env, tools_venv


def lab_pytest(*paths: str, extra_env: dict[str, str] | None = None) -> None:
    """Checks of the running lab (tests/lab, tests/e2e, tests/faults): pytest
    from the project's venv, with the lab's URL, inventory and tools."""
    env = {
        **tools_env(),
        "QUEUESVC_LAB_TESTS": "1",
        "QUEUESVC_E2E_URL": config.LB_URL,
        "QUEUESVC_E2E_VERIFY": "no",  # lb1's certificate is self-signed in the lab
        "QUEUESVC_E2E_INVENTORY": str(config.ROOT / "inventories/vagrant"),
        "QUEUESVC_ANSIBLE_BIN": str(config.TOOLS_VENV / "bin"),
        "QUEUESVC_LAB_LOGS": str(config.LOGS),
        # Read now: the keys exist once the lab is provisioned.
        "QUEUESVC_E2E_KEY": lab_key_if_any("demo"),
        "QUEUESVC_E2E_ADMIN_KEY": lab_key_if_any("admin"),
        **site_tags_env(),
        **(extra_env or {}),
    }
    run(
        [config.VENV / "bin/pytest", "-p", "no:cacheprovider", "-q", "-rA", *paths],
        env=env,
        cwd=config.ROOT,
    )


def lab_key_if_any(name: str) -> str:
    try:
        return config.lab_api_key(name)
    except FileNotFoundError:
        return ""


def vagrant_up() -> None:
    started = time.monotonic()
    logfile = run_logged(
        "vagrant-up",
        ["vagrant", "up", "--provider=lxc"],
        env={**tools_env(), **site_tags_env()},
        cwd=config.ROOT,
    )
    recap = logfile.read_text().split("PLAY RECAP")[-1].splitlines()[:10]
    print("PLAY RECAP" + "\n".join(recap))
    print(f"vagrant_up_seconds={round(time.monotonic() - started)}")


def up() -> None:
    need_root()
    host.prepare()
    tools_venv()
    box.build()
    project_venv()
    vagrant_up()
    lab_pytest("tests/lab/test_running_lab.py")


def down(purge: bool = False) -> None:
    host.teardown(purge)


def lab_tiers() -> str:
    """QUEUESVC_LAB_TIERS: "all" (default, what CI runs) or "common" (a quick look)."""
    tiers = os.environ.get("QUEUESVC_LAB_TIERS", "all")
    if tiers not in ("all", "common"):
        die("QUEUESVC_LAB_TIERS must be all or common")
    return tiers


def vagrant_destroy() -> None:
    if (config.ROOT / ".vagrant/machines").is_dir():
        run_logged(
            "vagrant-destroy", ["vagrant", "destroy", "-f"], env=tools_env(), cwd=config.ROOT
        )


def site_tags_env() -> dict[str, str]:
    """The Vagrantfile's provisioner and tests/lab read QUEUESVC_SITE_TAGS."""
    return {"QUEUESVC_SITE_TAGS": "common" if lab_tiers() == "common" else ""}


def guard_refuses_up() -> None:
    """Without the guard, the Vagrantfile's trigger refuses to start a host."""
    log("vagrant up lb1 with the guard pointed at a missing table")
    lab_pytest("tests/lab/test_guard_before_up.py")
