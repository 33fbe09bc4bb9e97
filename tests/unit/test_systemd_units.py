"""The unit templates of systemd/, rendered with the app role's defaults as the
role renders them, pass `systemd-analyze verify` offline: in a scratch root
with the system's own units and stand-ins at the paths the units execute."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / ".venv-ansible/bin/ansible"


def _needs(what: str, present: bool) -> None:
    if not present:
        reason = f"needs {what}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (installed by `bash scripts/test.sh`)")
        pytest.skip(reason)


def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    _needs("systemd-analyze", shutil.which("systemd-analyze") is not None)
    _needs(".venv-ansible (python3 -m scripts.lab test builds it)", ANSIBLE.exists())
    units_dir = tmp_path / "etc/systemd/system"
    units_dir.mkdir(parents=True)
    shutil.copytree("/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "bin").mkdir()
    shutil.copy("/bin/kill", tmp_path / "bin/kill")
    names = []
    for template in sorted((REPO / "systemd").glob("*.service.j2")):
        unit = units_dir / template.name.removesuffix(".j2")
        subprocess.run(
            [
                str(ANSIBLE), "localhost", "-i", "localhost,", "-c", "local",
                "-e", f"ansible_python_interpreter={ANSIBLE.parent / 'python'}",
                "-e", f"@{REPO / 'roles/app/defaults/main.yml'}",
                "-m", "ansible.builtin.template", "-a", f"src={template} dest={unit} mode=0644",
            ],
            env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        for exe in re.findall(r"^ExecStart=(\S+)", unit.read_text(), re.M):
            stand_in = tmp_path / exe.lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("#!/bin/sh\n")
            stand_in.chmod(0o755)
        names.append(unit.name.replace("@.service", "@default.service"))
    assert names == ["queuesvc-api.service", "queuesvc-worker@default.service"]
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--generators=no", f"--root={tmp_path}", *names],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout + verify.stderr == ""
