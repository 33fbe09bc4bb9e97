"""What of the lab runs now: its hosts, molecule's containers, their memory."""

from __future__ import annotations

from pathlib import Path

from . import config
from .sh import output, succeeds, which


def lab_hosts_running() -> list[str]:
    """Lab hosts running now (the Vagrantfile names them queuesvc-<host>)."""
    if not which("lxc-ls"):
        return []
    names = output(["lxc-ls", "--running", "-1"], check=False).split()
    return [n for n in names if n.startswith(f"{config.SLUG}-")]


def lab_hosts() -> list[str]:
    """Lab hosts in any state."""
    if not which("lxc-ls"):
        return []
    return [
        n for n in output(["lxc-ls", "-1"], check=False).split() if n.startswith(f"{config.SLUG}-")
    ]


def molecule_containers() -> list[str]:
    """Containers on the molecule network, in any state (this checkout's or another's)."""
    if not which("podman") or not succeeds(["podman", "network", "exists", config.MOL_NETWORK]):
        return []
    names = output(
        [
            "podman",
            "ps",
            "-a",
            "--filter",
            f"network={config.MOL_NETWORK}",
            "--format",
            "{{.Names}}",
        ],
        check=False,
    )
    return names.split()


def _cgroup(host: str) -> Path | None:
    for path in (
        Path(f"/sys/fs/cgroup/memory/lxc.payload.{host}"),
        Path(f"/sys/fs/cgroup/lxc.payload.{host}"),
    ):
        if path.is_dir():
            return path
    return None


def _read(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def memory_now() -> int:
    """The running lab hosts' memory use now, in bytes (sum of their cgroups)."""
    total = 0
    for host in lab_hosts_running():
        cg = _cgroup(host)
        if cg:
            total += _read(cg / "memory.current") or _read(cg / "memory.usage_in_bytes")
    return total


def memory_line() -> str:
    """The running hosts' peak and current memory, each summed (the sum of the
    peaks bounds the lab's peak)."""
    peak = now = count = 0
    for host in lab_hosts_running():
        cg = _cgroup(host)
        if not cg:
            continue
        count += 1
        current = _read(cg / "memory.current") or _read(cg / "memory.usage_in_bytes")
        peak += _read(cg / "memory.peak") or _read(cg / "memory.max_usage_in_bytes") or current
        now += current
    return f"lab_hosts={count} lab_memory_peak_mb={peak >> 20} lab_memory_now_mb={now >> 20}"
