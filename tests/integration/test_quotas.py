"""Quotas per owner against the real API and Redis: the submit rate (a token
bucket every process shares) and the cost of unfinished tasks, each a 429
with Retry-After that leaves other owners alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import wait_status
from tests.integration.services import bearer, create_key, free_port, gunicorn_api, wait_http_ok

# One submit per 5 s past a burst of 5: slow enough that a loaded machine's
# slow requests do not refill the bucket during the test.
RATE, BURST, IN_FLIGHT_COST = 0.2, 5, 15_000


@pytest.fixture(scope="module")
def tight_api(app_env: dict[str, str], workdir: Path, worker: Any) -> Iterator[str]:
    """A second API with small quotas (the session's API has them out of the way)."""
    metrics_dir = workdir / "metrics-quotas"  # every process's counters on /metrics
    metrics_dir.mkdir()
    env = {
        **app_env,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "APP_QUOTA_SUBMIT_RATE": str(RATE),
        "APP_QUOTA_SUBMIT_BURST": str(BURST),
        "APP_QUOTA_IN_FLIGHT_COST": str(IN_FLIGHT_COST),
    }
    port = free_port()
    process = gunicorn_api(env, workdir / "api-quotas.log", port)
    process.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(base + "/health/live")
    except TimeoutError:
        pytest.fail("API did not start:\n" + process.tail())
    yield base
    process.stop()


def _client(base: str, app_env: dict[str, str], owner: str) -> httpx.Client:
    key = create_key(app_env, owner, "tasks:submit,tasks:read")
    return httpx.Client(base_url=base, headers=bearer(key), timeout=15)


def _submit(http: httpx.Client, iterations: int = 1) -> httpx.Response:
    return http.post("/api/async/process", json={"data": "q", "iterations": iterations})


def test_a_burst_past_the_rate_is_429_with_retry_after_and_spares_others(
    tight_api: str, app_env: dict[str, str]
) -> None:
    with (
        _client(tight_api, app_env, "rate-flood") as flood,
        _client(tight_api, app_env, "rate-calm") as calm,
    ):
        codes = [_submit(flood).status_code for _ in range(BURST + 5)]
        assert codes[:BURST] == [202] * BURST
        assert codes.count(429) >= 4, codes  # one may pass on a refill
        refused = _submit(flood)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 1 / RATE
        assert "submit rate" in refused.json()["detail"]
        # Another owner has its own bucket.
        assert _submit(calm).status_code == 202
        metrics = httpx.get(f"{tight_api}/metrics").text
        assert 'queuesvc_quota_refusals_total{kind="rate"}' in metrics


def test_unfinished_work_over_the_cost_cap_is_429_until_some_finishes(
    tight_api: str, app_env: dict[str, str]
) -> None:
    with _client(tight_api, app_env, "heavy") as http:
        first = _submit(http, 10_000)
        assert first.status_code == 202, first.text
        over = _submit(http, 10_000)
        assert over.status_code == 429
        assert "unfinished tasks" in over.json()["detail"]
        assert int(over.headers["retry-after"]) >= 1
        assert _submit(http, 1_000).status_code == 202  # still under the cap
        # A cancel ends the first task: its cost leaves the owner's total.
        first_id = first.json()["task_id"]
        assert http.delete(f"/api/async/{first_id}").status_code == 200
        again = _submit(http, 10_000)
        assert again.status_code == 202, again.text
        http.delete(f"/api/async/{again.json()['task_id']}")


def test_a_finished_task_gives_its_cost_back(
    tight_api: str, app_env: dict[str, str], redis_client: Any
) -> None:
    with _client(tight_api, app_env, "settled") as http:
        # Thousands of steps: still running when the counter is read (a
        # 3-step task could already have finished and given its cost back).
        task_id = _submit(http, 3000).json()["task_id"]
        assert redis_client.get("queuesvc:quota:in-flight:settled") == "3000"
        wait_status(http, task_id, {"SUCCESS"})
    assert redis_client.get("queuesvc:quota:in-flight:settled") == "0"
