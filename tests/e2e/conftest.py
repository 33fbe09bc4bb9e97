"""End-to-end tests against a deployed lab (run by python3 -m scripts.lab, not by default).

Settings from the environment:
  QUEUESVC_E2E_URL        the load balancer, e.g. https://192.168.56.10
  QUEUESVC_E2E_VERIFY     CA bundle for its certificate, or "no" (lab's self-signed)
  QUEUESVC_E2E_INVENTORY  the lab's Ansible inventory (for stopping a unit, deploying)
  QUEUESVC_ANSIBLE_BIN    directory with ansible and ansible-playbook
  QUEUESVC_E2E_KEY        an API key of one tenant, every scope but admin (the lab's "demo")
  QUEUESVC_E2E_ADMIN_KEY  an admin API key (the lab's "admin")
  QUEUESVC_LAB_LOGS       where to keep each playbook's output (optional)
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURES: list[str] = []


@pytest.fixture(scope="session")
def lab() -> dict[str, str]:
    url = os.environ.get("QUEUESVC_E2E_URL")
    if not url:
        pytest.skip(
            "no deployed lab: QUEUESVC_E2E_URL is not set (python3 -m scripts.lab runs these)"
        )
    keys = {
        name: os.environ.get(f"QUEUESVC_E2E_{name.upper()}", "") for name in ("key", "admin_key")
    }
    missing = [f"QUEUESVC_E2E_{name.upper()}" for name, value in keys.items() if not value]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: the lab's API keys (python3 -m scripts.lab api-key)"
        )
    return {
        **keys,
        "url": url.rstrip("/"),
        "verify": os.environ.get("QUEUESVC_E2E_VERIFY", "yes"),
        "inventory": os.environ.get("QUEUESVC_E2E_INVENTORY", str(REPO / "inventories/vagrant")),
        "bin": os.environ.get("QUEUESVC_ANSIBLE_BIN", str(REPO / ".venv-ansible/bin")),
    }


def _verify(lab: dict[str, str]) -> bool | str:
    return False if lab["verify"] == "no" else (True if lab["verify"] == "yes" else lab["verify"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(lab: dict[str, str]) -> Iterator[httpx.Client]:
    """The tenant's client (the lab's demo key)."""
    with httpx.Client(
        base_url=lab["url"], verify=_verify(lab), timeout=15, headers=bearer(lab["key"])
    ) as http:
        yield http


@pytest.fixture
def admin_client(lab: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=lab["url"], verify=_verify(lab), timeout=15, headers=bearer(lab["admin_key"])
    ) as http:
        yield http


@pytest.fixture
def ansible(lab: dict[str, str]) -> Any:
    """Run ansible or ansible-playbook against the lab inventory from the project
    root. A playbook's output, ending with its tasks' times, goes to
    $QUEUESVC_LAB_LOGS/e2e-<playbook>-<time>.log when that is set; a failure
    or a run past `timeout` shows its end."""

    def run(tool: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        command = [str(Path(lab["bin"]) / tool), "-i", lab["inventory"], *args]
        env = {**os.environ, "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
        try:
            result = subprocess.run(
                command,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = _text(exc.stdout)
            _keep_log(args, output)
            raise AssertionError(
                f"{' '.join(command)} ran past {timeout:.0f} s; its output ends:\n{output[-4000:]}"
            ) from None
        _keep_log(args, result.stdout)
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
            )
        return result

    return run


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even from a run with text=True.
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _keep_log(args: tuple[str, ...], output: str) -> None:
    logs = os.environ.get("QUEUESVC_LAB_LOGS")
    playbook = next((Path(arg).stem for arg in args if arg.endswith(".yml")), None)
    if logs and playbook:
        path = Path(logs) / f"e2e-{playbook}-{time.strftime('%H%M%S')}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(output)


def record(line: str) -> None:
    """A measured figure, printed at the end of the run."""
    FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in FIGURES:
        terminalreporter.write_line(f"figure: {line}")
