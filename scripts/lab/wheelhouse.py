"""The wheelhouse the app role installs from, built on the controller: the
project's wheel and every dependency as binary wheels for the hosts' Python,
at the versions in constraints.txt. The hosts never reach PyPI.

Cached by a hash of its inputs (the sources, pyproject.toml, constraints.txt,
the target); prints one JSON line: {"version", "release", "archive", "built"}.
A label, when given, is appended to the release name (a redeploy of the same
code as a new release, e.g. to rehearse a rolling deploy).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from . import config
from .sh import die, run

MANYLINUX = (
    "manylinux2014",
    "manylinux_2_17",
    "manylinux_2_28",
    "manylinux_2_31",
    "manylinux_2_34",
)


def _inputs_hash(python_version: str, arch: str) -> str:
    files = subprocess.run(
        ["git", "ls-files", "-z", "app", "pyproject.toml", "constraints.txt", "README.md"],
        cwd=config.ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    digest = hashlib.sha256()
    for name in sorted(f for f in files if f):
        digest.update(name + hashlib.sha256((config.ROOT / name.decode()).read_bytes()).digest())
    digest.update(f"{python_version} {arch}".encode())
    return digest.hexdigest()[:10]


def build(python_version: str, arch: str = "x86_64", label: str = "") -> dict[str, object]:
    if not re.fullmatch(r"3\.\d+", python_version):
        die(f"bad Python version: {python_version}")
    if not re.fullmatch(r"[A-Za-z0-9._]*", label):
        die(f"bad release label: {label}")
    init = (config.ROOT / "app/__init__.py").read_text()
    version = re.search(r'^__version__ = "(.*)"', init, re.M) or die("no __version__ in app/")
    release = f"{version[1]}-{_inputs_hash(python_version, arch)}" + (f"-{label}" if label else "")
    out_root = Path(os.environ.get("QUEUESVC_BUILD_DIR", config.ROOT / ".build")) / "wheelhouse"
    directory = out_root / f"py{python_version}-{release}"
    archive = directory.with_name(directory.name + ".tar.gz")
    out_root.mkdir(parents=True, exist_ok=True)
    # One build at a time: CI's molecule scenario and the lab may ask at once,
    # and `pip wheel .` builds in the source tree.
    with (out_root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = _build_unless_cached(directory, archive, version[1], release, python_version, arch)
    return {"version": version[1], "release": release, "archive": str(archive), "built": built}


def _build_unless_cached(
    directory: Path, archive: Path, version: str, release: str, python_version: str, arch: str
) -> bool:
    out_root = directory.parent
    built = False
    if not (archive.exists() and archive.stat().st_size):
        python = config.VENV / "bin/python"
        pip = [str(python if python.exists() else sys.executable), "-m", "pip", "-q"]
        with tempfile.TemporaryDirectory(dir=out_root, prefix=".tmp.") as tmp:
            wheels = Path(tmp) / "wheelhouse"
            run([*pip, "wheel", "--no-deps", "-w", wheels, "."], cwd=config.ROOT, to_stderr=True)
            platforms = [arg for tag in MANYLINUX for arg in ("--platform", f"{tag}_{arch}")]
            own = next(wheels.glob(f"queuesvc-{version}-*.whl"))
            run([*pip, "download", "-d", wheels, "-c", "constraints.txt", "--only-binary=:all:",
                 "--implementation", "cp", "--python-version", python_version, *platforms, own],
                cwd=config.ROOT, to_stderr=True)  # fmt: skip
            (wheels / "RELEASE").write_text(release + "\n")
            with tarfile.open(Path(tmp) / "archive.tar.gz", "w:gz") as tar:
                tar.add(wheels, arcname="wheelhouse")
                tar.add(config.ROOT / "README.md", arcname="README.md")
            shutil.rmtree(directory, ignore_errors=True)
            wheels.rename(directory)
            (Path(tmp) / "archive.tar.gz").rename(archive)
        built = True
    return built


def main(python_version: str, arch: str, label: str) -> None:
    print(json.dumps(build(python_version, arch, label)))
