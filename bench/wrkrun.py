"""Running wrk: one run against a URL, read into figures (bench/wrkparse.py).
With an API key every request carries it, through bench/bearer.lua: the key
goes to wrk in its environment, never on its command line."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from bench.wrkparse import WrkRun, parse_wrk

BEARER_SCRIPT = Path(__file__).resolve().with_name("bearer.lua")


def wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    duration: int,
    timeout_s: int = 5,
    script: Path | None = None,
    env: Mapping[str, str] | None = None,
    key: str | None = None,
) -> WrkRun:
    """One `wrk --latency` run; `script` sets the request (None: GET), `key`
    (None: no Authorization header) is sent as a Bearer token."""
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--latency",
        "--timeout",
        f"{timeout_s}s",
    ]
    scripts_env = dict(env or {})
    if key:
        scripts_env["WRK_API_KEY"] = key
        if script:
            scripts_env["WRK_NEXT_SCRIPT"] = str(script)
        script = BEARER_SCRIPT
    if script:
        command += ["-s", str(script)]
    done = subprocess.run(
        [*command, url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        env={**os.environ, **scripts_env},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} {url} exited with {done.returncode}: "
            f"{(done.stderr + done.stdout).strip()}"
        )
    return parse_wrk(done.stdout)
