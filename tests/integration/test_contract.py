"""The OpenAPI schema is an exact contract: Schemathesis finds no answer it does not describe.

Every check, every phase (examples, coverage, fuzzing, stateful), against the API and
worker of the other integration tests; tests/integration/schemathesis.toml bounds it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import redis

from app.status import KEY_PREFIX
from tests.integration.conftest import SUMMARY_LINES
from tests.integration.services import Process, bearer

CONFIG = Path(__file__).with_name("schemathesis.toml")
RUN_TIMEOUT_SECONDS = 300


def test_api_matches_its_schema(
    api: str,
    worker: Process,
    workdir: Path,
    redis_client: redis.Redis,
    api_keys: dict[str, dict[str, Any]],
) -> None:
    # An admin key reaches every route; the `ignored_auth` check also tries each
    # route without it and with a wrong one, and wants the documented 401.
    authorization = bearer(api_keys["admin"])["Authorization"]
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG)),
        *("run", f"{api}/openapi.json", "--checks", "all"),
        *("--header", f"Authorization: {authorization}"),
        *("--report", "junit", "--report-dir", str(workdir / "schemathesis")),
    ]
    try:
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
            check=False,
            cwd=workdir,  # its example cache, .schemathesis/, stays out of the work tree
        )
    finally:
        _cancel_unfinished(api, redis_client, authorization)
    # The summary and each failure's curl command to reproduce it.
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    cases = re.search(r"^\s*(\d+ generated.*)$", run.stdout, re.MULTILINE)
    outcome = re.findall(r"^=+ (.*) =+$", run.stdout, re.MULTILINE)
    SUMMARY_LINES.append(
        "Schemathesis: "
        + "; ".join(part for part in (cases and cases.group(1), outcome and outcome[-1]) if part)
    )


def _cancel_unfinished(api: str, redis_client: redis.Redis, authorization: str) -> None:
    """Cancel the tasks the run left queued or running (up to 10,000 steps each), so the
    worker is free for the tests after this one."""
    unfinished = {"PENDING", "STARTED", "PROGRESS", "RETRY"}
    headers = {"Authorization": authorization}
    with httpx.Client(base_url=api, timeout=15, headers=headers) as client:
        for key in redis_client.scan_iter(match=f"{KEY_PREFIX}*", count=500):
            if redis_client.hget(key, "status") in unfinished:
                client.delete(f"/api/async/{key.removeprefix(KEY_PREFIX)}")
