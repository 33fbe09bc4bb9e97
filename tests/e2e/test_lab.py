"""The deployed system through the load balancer: the user's picture, end to end."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.e2e.conftest import _verify, record

APP_SERVERS = {"app1", "app2", "app3"}


def test_health_through_the_load_balancer(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "healthy",
        "services": {"mongodb": "connected", "redis": "connected", "rabbitmq": "connected"},
    }


def test_item_crud_through_the_load_balancer(client: httpx.Client) -> None:
    created = client.post("/api/items", json={"name": f"e2e-{uuid.uuid4().hex[:6]}"})
    assert created.status_code == 201, created.text
    item = created.json()
    assert client.get(f"/api/items/{item['id']}").json() == item
    patched = client.patch(f"/api/items/{item['id']}", json={"description": "through lb1"})
    assert patched.json()["description"] == "through lb1"
    assert client.delete(f"/api/items/{item['id']}").status_code == 204
    assert client.get(f"/api/items/{item['id']}").status_code == 404


def test_requests_are_spread_over_every_app_server(client: httpx.Client) -> None:
    upstreams = Counter(
        client.get("/health/live").headers.get("x-upstream", "missing") for _ in range(30)
    )
    record(f"30 GET /health/live through lb1 answered by: {dict(upstreams)}")
    assert "missing" not in upstreams, "the lab's nginx must send X-Upstream"
    assert len(upstreams) == 3, upstreams


def test_tasks_run_on_workers_of_several_hosts(client: httpx.Client) -> None:
    ids = []
    for n in range(20):
        response = client.post("/api/async/process", json={"data": f"e2e {n}", "iterations": 300})
        assert response.status_code == 202, response.text
        ids.append(response.json()["task_id"])
    deadline = time.monotonic() + 180
    finished: dict[str, dict[str, Any]] = {}
    while len(finished) < len(ids) and time.monotonic() < deadline:
        for task_id in ids:
            if task_id not in finished:
                status = client.get(f"/api/async/status/{task_id}").json()
                if status["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                    finished[task_id] = status
        time.sleep(0.5)
    assert len(finished) == len(ids), f"{len(ids) - len(finished)} tasks unfinished"
    assert {s["status"] for s in finished.values()} == {"SUCCESS"}
    hosts = Counter(s["worker"].split("@", 1)[1] for s in finished.values())
    record(f"20 tasks ran on: {dict(hosts)}")
    assert len(hosts) >= 2, hosts
    assert set(hosts) <= APP_SERVERS
    for task_id in ids:  # the results are in MongoDB
        stored = client.get(f"/api/async/result/{task_id}")
        assert stored.status_code == 200, stored.text
        assert stored.json()["result"]["total"] == 300


def test_stopping_one_api_loses_no_get(client: httpx.Client, ansible: Any) -> None:
    item = client.post("/api/items", json={"name": "failover"}).json()
    ansible(
        "ansible",
        "app2",
        "-b",
        "-m",
        "ansible.builtin.systemd_service",
        "-a",
        "name=queuesvc-api.service state=stopped",
    )
    try:
        codes = Counter(client.get(f"/api/items/{item['id']}").status_code for _ in range(40))
        record(f"40 GETs with the API stopped on app2: {dict(codes)}")
        assert codes == Counter({200: 40}), codes
    finally:
        ansible(
            "ansible",
            "app2",
            "-b",
            "-m",
            "ansible.builtin.systemd_service",
            "-a",
            "name=queuesvc-api.service state=started",
        )


# Counted apart from the outcomes: a kept-alive connection nginx closed before
# answering. Each drain reloads nginx, and its old workers close their idle
# client connections; a request sent on one at that instant gets no response
# (HTTP/1.1's keep-alive race). nginx never read that request, so it is sent
# once more on a new connection, as browsers do; the retry's result is counted.
CLOSED_BEFORE_ANSWER = "closed before answering, sent again"


@contextmanager
def bounded_load(lab: dict[str, str], item_id: str) -> Iterator[Counter[str]]:
    """Four clients looping GET, GET item and POST task until the block ends
    (at most 10 minutes); yields the count of status codes and errors."""
    stop = threading.Event()
    outcomes: Counter[str] = Counter()

    def send(http: httpx.Client, method: str, path: str, body: Any) -> str:
        try:
            try:
                return str(http.request(method, path, json=body).status_code)
            except httpx.RemoteProtocolError as exc:
                if "without sending a response" not in str(exc):
                    raise  # a response cut short is a failure
                outcomes[CLOSED_BEFORE_ANSWER] += 1
                return str(http.request(method, path, json=body).status_code)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def load() -> None:
        with httpx.Client(base_url=lab["url"], verify=_verify(lab), timeout=10) as http:
            end = time.monotonic() + 600
            while not stop.is_set() and time.monotonic() < end:
                for method, path, body in (
                    ("GET", "/health/live", None),
                    ("GET", f"/api/items/{item_id}", None),
                    ("POST", "/api/async/process", {"data": "deploy", "iterations": 5}),
                ):
                    outcomes[send(http, method, path, body)] += 1
                time.sleep(0.02)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def releases(ansible: Any, link: str = "current") -> dict[str, str]:
    """Where /opt/queuesvc/<link> (current or previous) points on each app server."""
    result = ansible(
        "ansible",
        "app_servers",
        "-b",
        "-m",
        "ansible.builtin.command",
        "-a",
        f"readlink /opt/queuesvc/{link}",
    )
    releases = dict(re.findall(r"^(app\d+) \| CHANGED \| rc=0 >>\n(\S+)$", result.stdout, re.M))
    assert set(releases) == APP_SERVERS, result.stdout
    return releases


def playbook_under_load(
    lab: dict[str, str], client: httpx.Client, ansible: Any, what: str, *playbook: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Run ansible-playbook under bounded load and record how long it took and
    how the requests fared; not one may fail. Returns where each app server's
    `current` pointed before and after."""
    item = client.post("/api/items", json={"name": "under-load"}).json()
    before = releases(ansible)
    started = time.monotonic()
    with bounded_load(lab, item["id"]) as outcomes:
        ansible("ansible-playbook", *playbook)
        duration = time.monotonic() - started
    resent = outcomes.pop(CLOSED_BEFORE_ANSWER, 0)
    failures = {code: n for code, n in outcomes.items() if not code.startswith("2")}
    record(
        f"{what} of 3 app servers: {duration:.0f} s; requests under load: "
        f"{sum(outcomes.values())}, non-2xx or errors: {sum(failures.values())} {failures}; "
        f"{CLOSED_BEFORE_ANSWER}: {resent}"
    )
    assert not failures, failures
    return before, releases(ansible)


def test_rolling_deploy_under_load_has_no_failed_request(
    lab: dict[str, str], client: httpx.Client, ansible: Any
) -> None:
    label = f"e2e{int(time.time())}"
    before, after = playbook_under_load(
        lab,
        client,
        ansible,
        "rolling deploy",
        "ansible/deploy.yml",
        "-e",
        f"app_release_label={label}",
    )
    assert all(path.endswith(f"-{label}") for path in after.values()), after
    assert all(after[host] != before[host] for host in APP_SERVERS), (before, after)
    assert releases(ansible, "previous") == before


def test_rollback_under_load_returns_to_the_previous_release(
    lab: dict[str, str], client: httpx.Client, ansible: Any
) -> None:
    """Runs after the deploy test: every app server goes back to the release
    it ran before, and that deploy becomes the previous one."""
    previous = releases(ansible, "previous")
    before, after = playbook_under_load(lab, client, ansible, "rollback", "ansible/rollback.yml")
    assert after == previous, (previous, after)
    assert releases(ansible, "previous") == before
    assert client.get("/health").status_code == 200
