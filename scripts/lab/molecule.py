"""`molecule <command>` for the roles' scenarios, several at a time.

Each scenario logs to LOGS/molecule-<role>-<scenario>.log; a failed one's last
lines are printed. Container names are unique per scenario, so scenarios run
side by side. Needs the prepared host and the images (prepare, box).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from . import config, guard
from .sh import LabError, die, log, run_logged, succeeds, tools_env, which
from .sh import run as sh_run

# Most of a scenario's time is spent waiting on apt and systemd, not on CPU,
# so three run at once on two cores. The longest start first (measured in CI:
# app 26 min, nginx 19, mongodb 16, rabbitmq/cluster 15, rabbitmq 10,
# common 8, redis 6, mongodb/official 3) so that the last to end is short.
LONGEST_FIRST = [
    "app/default",
    "nginx/default",
    "mongodb/default",
    "rabbitmq/cluster",
    "rabbitmq/default",
    "common/default",
    "redis/default",
    "mongodb/official",
]


def scenarios(roles: list[str], only: str | None, command: str) -> list[str]:
    """role/scenario pairs: every scenario for `test`, the default one otherwise."""
    roles = roles or sorted(p.parent.name for p in (config.ROOT / "roles").glob("*/molecule"))
    found = []
    for role in roles:
        directory = config.ROOT / "roles" / role / "molecule"
        if not directory.is_dir():
            die(f"role {role} has no molecule scenarios")
        for scenario in sorted(p.name for p in directory.iterdir() if p.is_dir()):
            if (only and scenario != only) or (
                not only and command != "test" and scenario != "default"
            ):
                continue
            found.append(f"{role}/{scenario}")
    if not found:
        die("no scenario matches")
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    return sorted(found, key=lambda s: rank.get(s, -1))


def container_names(pairs: list[str]) -> list[str]:
    """The platform names of these scenarios (what their containers are called)."""
    names = []
    for pair in pairs:
        text = (
            config.ROOT / "roles" / pair.replace("/", "/molecule/") / "molecule.yml"
        ).read_text()
        names += [
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("  - name:")
        ]
    return names


def _environment() -> dict[str, str]:
    for release in ("13", "12"):
        if not succeeds(["podman", "image", "exists", f"{config.IMAGE}{release}:latest"]):
            die(f"image {config.IMAGE}{release} missing: run `python3 -m scripts.lab box`")
    if not succeeds(["podman", "network", "exists", config.MOL_NETWORK]):
        die(f"podman network {config.MOL_NETWORK} missing: run `python3 -m scripts.lab prepare`")
    if not which("socat") or not config.MOL_SSH_KEY.is_file():
        die(f"socat or {config.MOL_SSH_KEY} missing: run `python3 -m scripts.lab prepare`")
    if guard.problems():
        die("network guard missing: run `python3 -m scripts.lab prepare`")
    return {
        **tools_env(),
        "QUEUESVC_MIRROR_IP": guard.mirror_addrs()[0],
        "QUEUESVC_MOLECULE_SSH_KEY": str(config.MOL_SSH_KEY),
    }


def _one(pair: str, command: str, env: dict[str, str], logged: bool) -> tuple[bool, int]:
    """One scenario: its output passed through, or into its log (printed when it fails)."""
    role, scenario = pair.split("/")
    cmd, cwd = ["molecule", command, "-s", scenario], config.ROOT / "roles" / role
    started = time.monotonic()
    try:
        if logged:
            run_logged(f"molecule-{role}-{scenario}", cmd, env=env, cwd=cwd, tail=40)
        else:
            sh_run(cmd, env=env, cwd=cwd)
        ok = True
    except LabError as error:
        log(f"molecule {pair}: {error}")
        ok = False
    seconds = round(time.monotonic() - started)
    print(f"molecule_{command}_{role}_{scenario}_seconds={seconds} ok={ok}", flush=True)
    return ok, seconds


def run(roles: list[str], only: str | None = None, jobs: int = 1, command: str = "test") -> None:
    pairs = scenarios(roles, only, command)
    env = _environment()
    log(f"molecule {command}: {' '.join(pairs)}, {jobs} at a time")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(lambda pair: _one(pair, command, env, logged=jobs > 1), pairs)
        failed = [pair for pair, (ok, _) in zip(pairs, results, strict=True) if not ok]
    if failed:
        die(f"failed scenarios: {' '.join(failed)}")
