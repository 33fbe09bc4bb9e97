"""Task event streams and the `queuesvc` client through the load balancer."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import httpx

from app import sse
from tests.e2e.conftest import REPO, _verify, record
from tests.e2e.streams import STREAM_TASK_ITERATIONS


def test_events_reach_the_client_through_lb1_as_they_happen(client: httpx.Client) -> None:
    """nginx passes each event on at once (no buffering): progress arrives
    while the task runs, then the final event with its result."""
    body = {"data": "live", "iterations": STREAM_TASK_ITERATIONS}
    task_id = client.post("/api/async/process", json=body).json()["task_id"]
    arrivals: list[tuple[float, sse.Event]] = []
    opened = time.monotonic()
    timeout = httpx.Timeout(10, read=60)
    with client.stream("GET", f"/api/async/events/{task_id}", timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith(sse.MEDIA_TYPE)
        for event in sse.parse(response.iter_lines()):
            arrivals.append((time.monotonic() - opened, event))
    kinds = [event.event for _, event in arrivals]
    assert kinds[-1] == "final", kinds
    final = json.loads(arrivals[-1][1].data)
    assert final["status"] == "SUCCESS", final
    assert final["result"]["total"] == STREAM_TASK_ITERATIONS, final
    ids = [int(event.id) for _, event in arrivals if event.id is not None]
    assert ids == sorted(set(ids)), ids
    first, last = arrivals[0][0], arrivals[-1][0]
    during = [at for at, event in arrivals[:-1] if event.event != "final"]
    record(
        f"event stream through lb1: {len(arrivals)} events over {last:.1f} s, "
        f"first after {first * 1000:.0f} ms"
    )
    # Buffered, every event would arrive together with the last one.
    assert first < 2.0, arrivals[:3]
    assert len(during) >= 3, [at for at, _ in arrivals]
    assert last - during[0] > 1.0, [at for at, _ in arrivals]


def test_event_stream_refusals_through_lb1(lab: dict[str, str], client: httpx.Client) -> None:
    path = f"/api/async/events/{uuid.uuid4()}"
    unknown = client.get(path)
    assert unknown.status_code == 404, unknown.text
    assert unknown.headers["content-type"].startswith("application/json")
    anonymous = httpx.get(lab["url"] + path, verify=_verify(lab), timeout=15)
    assert anonymous.status_code == 401, anonymous.text


def queuesvc(lab: dict[str, str], key: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The project's `queuesvc` console script against lb1."""
    tls = ["--insecure"] if lab["verify"] == "no" else []
    if lab["verify"] not in ("yes", "no"):
        tls = ["--ca", lab["verify"]]
    return subprocess.run(
        [str(REPO / ".venv/bin/queuesvc"), "--url", lab["url"], *tls, *args],
        env={**os.environ, "QUEUESVC_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_cli_submits_and_waits_through_lb1(lab: dict[str, str]) -> None:
    started = time.monotonic()
    done = queuesvc(
        lab, lab["key"], "--json", "submit", "--data", "cli", "--iterations", "500", "--wait"
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    final = json.loads(done.stdout)
    assert final["status"] == "SUCCESS", final
    assert final["result"]["total"] == 500, final
    record(f"queuesvc submit --wait through lb1: {elapsed:.1f} s for 500 steps")

    status = queuesvc(lab, lab["key"], "--json", "status", final["task_id"])
    assert status.returncode == 0, status
    assert json.loads(status.stdout)["status"] == "SUCCESS", status


def test_the_cli_exit_codes_through_lb1(lab: dict[str, str]) -> None:
    refused = queuesvc(lab, "qsk_0000000000000000_" + "A" * 43, "status", str(uuid.uuid4()))
    assert refused.returncode == 4, (refused.stdout, refused.stderr)
    assert refused.stderr.count("\n") == 1, refused.stderr  # one line, no traceback
    assert "401" in refused.stderr, refused.stderr
    unknown = queuesvc(lab, lab["key"], "status", str(uuid.uuid4()))
    assert unknown.returncode == 2, (unknown.stdout, unknown.stderr)
    assert "404" in unknown.stderr, unknown.stderr
