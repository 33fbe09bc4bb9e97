"""Running commands: one owner each for logging, the log of a long step, apt
installs and virtualenvs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from . import config

Command = Sequence[str | os.PathLike[str]]
# CI prepares the lab while the service's stages run: one apt at a time.
_APT = threading.Lock()


class LabError(Exception):
    """A step of the lab failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def die(message: str) -> NoReturn:
    raise LabError(message)


def need_root() -> None:
    if os.geteuid() != 0:
        die("run as root (the lab changes host networking)")


def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if extra is None else {**os.environ, **extra}


def run(
    cmd: Command,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    quiet: bool = False,
    to_stderr: bool = False,
) -> None:
    """Run a command, its output passed through (to stderr when standard output
    is the caller's answer; dropped when quiet); raise on failure."""
    out = subprocess.DEVNULL if quiet else (sys.stderr if to_stderr else None)
    done = subprocess.run(
        [str(c) for c in cmd],
        env=_env(env),
        cwd=cwd,
        input=stdin,
        text=True,
        stdout=out,
        stderr=subprocess.DEVNULL if quiet else None,
        check=False,
    )
    if done.returncode != 0:
        die(f"{' '.join(map(str, cmd))} exited with {done.returncode}")


def succeeds(cmd: Command, *, env: Mapping[str, str] | None = None) -> bool:
    """Whether a command exits 0 (its output dropped; a missing program is a no)."""
    try:
        return (
            subprocess.run(
                [str(c) for c in cmd],
                env=_env(env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            ).returncode
            == 0
        )
    except FileNotFoundError:
        return False


def output(cmd: Command, *, check: bool = True) -> str:
    """A command's standard output (stripped); "" when it fails and check is off."""
    try:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        if check:
            die(f"{cmd[0]} is not installed")
        return ""
    if done.returncode != 0:
        if check:
            die(f"{' '.join(map(str, cmd))} exited with {done.returncode}: {done.stderr.strip()}")
        return ""
    return done.stdout.strip()


def run_logged(
    name: str,
    cmd: Command,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    tail: int = 60,
) -> Path:
    """Run a long command with its output in LOGS/<name>.log; on failure print
    the log's last lines and raise. Returns the log's path."""
    config.LOGS.mkdir(parents=True, exist_ok=True)
    path = config.LOGS / f"{name}.log"
    with path.open("w") as logfile:
        done = subprocess.run(
            [str(c) for c in cmd],
            env=_env(env),
            cwd=cwd,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if done.returncode != 0:
        lines = path.read_text(errors="replace").splitlines()[-tail:]
        print("\n".join(lines), file=sys.stderr)
        die(f"{name} failed (exit {done.returncode}); whole log: {path}")
    return path


def installed(package: str) -> bool:
    status = output(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return status.endswith("ok installed")


def apt_install(packages: Iterable[str]) -> None:
    """Install the Debian packages that are missing (without recommends)."""
    with _APT:
        missing = [p for p in packages if not installed(p)]
        if not missing:
            return
        log(f"apt-get install {' '.join(missing)}")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q"]
        subprocess.run([*apt, "update"], env=_env(env), stdout=subprocess.DEVNULL, check=False)
        run([*apt, "install", "-y", "--no-install-recommends", *missing], env=env, quiet=True)


def python_at_least(python: str, minor: int) -> bool:
    """Whether `python` runs and is Python 3.<minor> or newer (pyenv shims may not run)."""
    return succeeds([python, "-c", f"import sys; sys.exit(sys.version_info < (3, {minor}))"])


def virtualenv(path: Path, python: str, pip_args: Sequence[str], inputs: Sequence[Path]) -> Path:
    """A virtualenv at `path` with `pip install <pip_args>`; installed again only
    when one of the `inputs` files changes (a stamp file holds their hash)."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in inputs)).hexdigest()[:16]
    digest += hashlib.sha256(" ".join(pip_args).encode()).hexdigest()[:8]
    stamp = path / ".installed"
    if (path / "bin/python").exists() and stamp.exists() and stamp.read_text() == digest:
        return path
    if not succeeds([python, "-c", "import venv, ensurepip"]):
        apt_install(["python3-venv", "python3-pip"])
    log(f"installing {' '.join(pip_args)} into {path}")
    if not (path / "bin/python").exists():
        run([python, "-m", "venv", path])
    run_logged(
        f"pip-{path.name}",
        [path / "bin/pip", "install", "-q", "--disable-pip-version-check", *pip_args],
        cwd=config.ROOT,
    )
    stamp.write_text(digest)
    return path


def _venv_python() -> str:
    """The Python the project's virtualenvs are made with: this one if it is
    3.11 or newer, else Debian's."""
    return sys.executable if python_at_least(sys.executable, 11) else "/usr/bin/python3"


def project_venv() -> Path:
    """The service with its dev tools, at the versions in constraints.txt."""
    root = config.ROOT
    return virtualenv(
        config.VENV,
        _venv_python(),
        ["-c", "constraints.txt", "-e", ".[dev]"],
        [root / "pyproject.toml", root / "constraints.txt"],
    )


def tools_venv() -> Path:
    """The controller's tools (ansible, molecule, linters), pinned by requirements-ansible.txt."""
    return virtualenv(
        config.TOOLS_VENV,
        _venv_python(),
        ["-r", "requirements-ansible.txt"],
        [config.ROOT / "requirements-ansible.txt"],
    )


def tools_env() -> dict[str, str]:
    """The environment in which ansible, molecule and vagrant run."""
    return {
        "PATH": f"{config.TOOLS_VENV / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(config.ROOT / "ansible.cfg"),
        "HOME": os.environ.get("HOME", "/root"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_NO_COLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
    }


def which(program: str) -> bool:
    return shutil.which(program) is not None
