"""The deployed system through the load balancer: the user's picture, end to end."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import _verify, bearer, record
from tests.e2e.streams import CLOSED_BEFORE_ANSWER, followed_streams, unanswered
from tests.expected import HEALTHY

APP_SERVERS = {"app1", "app2", "app3"}
# Per load thread of bounded_load: four threads submit 8 tasks a second.
SUBMIT_INTERVAL_SECONDS = 0.5
# A guard against a hung playbook, not a target: a rolling deploy of the three
# app servers under this load takes 5 to 15 minutes on the shared 2-core
# machine (longer while molecule runs beside it in CI).
PLAYBOOK_UNDER_LOAD_TIMEOUT_SECONDS = 1800


def ad_hoc(ansible: Any, hosts: str, module: str, args: str) -> Any:
    """`ansible <hosts> -b -m <module> -a <args>`: one module run as root on lab hosts."""
    return ansible("ansible", hosts, "-b", "-m", module, "-a", args)


def test_health_through_the_load_balancer(admin_client: httpx.Client) -> None:
    response = admin_client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == HEALTHY


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


def test_one_idempotency_key_racing_on_every_app_server_creates_one_task(
    lab: dict[str, str],
) -> None:
    """30 submits with one Idempotency-Key at once through lb1, so on several app
    servers: one 202, the other 29 are 200 with the same task."""
    key, body = f"e2e-{uuid.uuid4()}", {"data": "e2e idempotent", "iterations": 1}

    async def race() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=30)
        async with httpx.AsyncClient(
            base_url=lab["url"],
            verify=_verify(lab),
            timeout=30,
            limits=limits,
            headers=bearer(lab["key"]),
        ) as http:
            return await asyncio.gather(
                *(
                    http.post("/api/async/process", json=body, headers={"Idempotency-Key": key})
                    for _ in range(30)
                )
            )

    responses = asyncio.run(race())
    codes = Counter(r.status_code for r in responses)
    upstreams = Counter(r.headers.get("x-upstream", "missing") for r in responses)
    record(f"30 racing submits with one Idempotency-Key: {dict(codes)}, by {dict(upstreams)}")
    assert codes == {202: 1, 200: 29}, codes
    assert len({r.json()["task_id"] for r in responses}) == 1
    assert len(upstreams) >= 2, upstreams


def test_stopping_one_api_loses_no_get(client: httpx.Client, ansible: Any) -> None:
    item = client.post("/api/items", json={"name": "failover"}).json()
    ad_hoc(
        ansible,
        "app2",
        "ansible.builtin.systemd_service",
        "name=queuesvc-api.service state=stopped",
    )
    try:
        codes = Counter(client.get(f"/api/items/{item['id']}").status_code for _ in range(40))
        record(f"40 GETs with the API stopped on app2: {dict(codes)}")
        assert codes == Counter({200: 40}), codes
    finally:
        ad_hoc(
            ansible,
            "app2",
            "ansible.builtin.systemd_service",
            "name=queuesvc-api.service state=started",
        )


@contextmanager
def bounded_load(lab: dict[str, str], item_id: str) -> Iterator[Counter[str]]:
    """Four clients looping GET, GET item and POST task until the block ends
    (at most PLAYBOOK_UNDER_LOAD_TIMEOUT_SECONDS); yields the count of status codes and errors."""
    stop = threading.Event()
    outcomes: Counter[str] = Counter()

    def send(http: httpx.Client, method: str, path: str, body: Any) -> str:
        try:
            try:
                return str(http.request(method, path, json=body).status_code)
            except httpx.RemoteProtocolError as exc:
                if not unanswered(exc):
                    raise  # a response cut short is a failure
                outcomes[CLOSED_BEFORE_ANSWER] += 1
                return str(http.request(method, path, json=body).status_code)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def load() -> None:
        with httpx.Client(
            base_url=lab["url"], verify=_verify(lab), timeout=10, headers=bearer(lab["key"])
        ) as http:
            end = time.monotonic() + PLAYBOOK_UNDER_LOAD_TIMEOUT_SECONDS
            next_submit = 0.0
            while not stop.is_set() and time.monotonic() < end:
                outcomes[send(http, "GET", "/health/live", None)] += 1
                outcomes[send(http, "GET", f"/api/items/{item_id}", None)] += 1
                # Submits paced under the tenant's rate quota (20/s by default):
                # a 429 here would be the quota, not the deploy.
                if time.monotonic() >= next_submit:
                    next_submit = time.monotonic() + SUBMIT_INTERVAL_SECONDS
                    body = {"data": "deploy", "iterations": 5}
                    outcomes[send(http, "POST", "/api/async/process", body)] += 1
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
    result = ad_hoc(
        ansible, "app_servers", "ansible.builtin.command", f"readlink /opt/queuesvc/{link}"
    )
    releases = dict(re.findall(r"^(app\d+) \| CHANGED \| rc=0 >>\n(\S+)$", result.stdout, re.M))
    assert set(releases) == APP_SERVERS, result.stdout
    return releases


def release_name(path: str) -> str:
    """The release's directory name, as -e app_rollback_release takes it."""
    return path.rsplit("/", 1)[-1]


def unit_starts(ansible: Any, host: str) -> str:
    """When the API and worker units of `host` last (re)started, and their PIDs."""
    result = ad_hoc(
        ansible,
        host,
        "ansible.builtin.command",
        "systemctl show --property=MainPID --property=ActiveEnterTimestampMonotonic"
        " queuesvc-api.service queuesvc-worker@default.service queuesvc-worker@imports.service",
    )
    return str(result.stdout)


def recap(stdout: str, host: str) -> dict[str, int]:
    """The PLAY RECAP counters of `host` (ok, changed, failed, ...)."""
    line = re.search(rf"^{host}\s+:(.*)$", stdout, re.M)
    assert line, stdout[-2000:]
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line.group(1))}


def playbook_under_load(
    lab: dict[str, str], client: httpx.Client, ansible: Any, what: str, *playbook: str
) -> tuple[dict[str, str], dict[str, str], str]:
    """Run ansible-playbook under bounded load and record how long it took and
    how the requests fared; not one may fail. Returns where each app server's
    `current` pointed before and after, and the playbook's output."""
    item = client.post("/api/items", json={"name": "under-load"}).json()
    before = releases(ansible)
    started = time.monotonic()
    with bounded_load(lab, item["id"]) as outcomes:
        result = ansible("ansible-playbook", *playbook, timeout=PLAYBOOK_UNDER_LOAD_TIMEOUT_SECONDS)
        duration = time.monotonic() - started
    resent = outcomes.pop(CLOSED_BEFORE_ANSWER, 0)
    failures = {code: n for code, n in outcomes.items() if not code.startswith("2")}
    record(
        f"{what}: {duration:.0f} s; requests under load: "
        f"{sum(outcomes.values())}, non-2xx or errors: {sum(failures.values())} {failures}; "
        f"{CLOSED_BEFORE_ANSWER}: {resent}"
    )
    assert not failures, failures
    return before, releases(ansible), result.stdout


def test_rolling_deploy_under_load_has_no_failed_request(
    lab: dict[str, str], client: httpx.Client, ansible: Any
) -> None:
    """Not one request fails, and the task event streams open on an app server
    when it stops end there and resume on another from their last event id."""
    label = f"e2e{int(time.time())}"
    with followed_streams(lab, seconds=PLAYBOOK_UNDER_LOAD_TIMEOUT_SECONDS) as streams:
        before, after, _ = playbook_under_load(
            lab,
            client,
            ansible,
            "rolling deploy of 3 app servers",
            "ansible/deploy.yml",
            "-e",
            f"app_release_label={label}",
        )
    assert all(path.endswith(f"-{label}") for path in after.values()), after
    assert all(after[host] != before[host] for host in APP_SERVERS), (before, after)
    assert releases(ansible, "previous") == before

    resumed = [seen for seen in streams.followed if seen.resumes]
    moved = Counter(seen.upstreams[i] for seen in resumed for i in range(len(seen.upstreams) - 1))
    record(
        f"event streams during the deploy: {len(streams.followed)} tasks followed through "
        f"lb1, {sum(seen.resumes for seen in resumed)} streams ended by a draining app "
        f"server and resumed with Last-Event-ID (ended on: {dict(moved)}); "
        f"problems: {dict(streams.problems)}"
    )
    streams.problems.pop(CLOSED_BEFORE_ANSWER, None)
    assert not streams.problems, streams.problems
    assert resumed, "no stream was open on an app server when the deploy stopped it"
    for seen in resumed:
        # Each stream resumed on another app server (lb1 had drained its own).
        pairs = zip(seen.upstreams, seen.upstreams[1:], strict=False)
        assert all(ended != next_one for ended, next_one in pairs), seen
    finals = Counter(str((seen.final or {}).get("status")) for seen in streams.followed)
    assert set(finals) == {"SUCCESS"}, finals


def test_rollback_under_load_returns_to_the_previous_release(
    lab: dict[str, str], client: httpx.Client, admin_client: httpx.Client, ansible: Any
) -> None:
    """Runs after the deploy test: every app server goes back to the release
    it ran before, and that deploy becomes the previous one."""
    previous = releases(ansible, "previous")
    before, after, _ = playbook_under_load(
        lab, client, ansible, "rollback of 3 app servers", "ansible/rollback.yml"
    )
    assert after == previous, (previous, after)
    assert releases(ansible, "previous") == before
    assert admin_client.get("/health").status_code == 200


def test_rollback_to_a_named_release_switches_only_the_hosts_not_on_it(
    lab: dict[str, str], client: httpx.Client, ansible: Any
) -> None:
    """Runs after the rollback test: app2 alone returns to the deploy's release,
    then a rollback to that release by name switches app1 and app3 and leaves
    app2 alone (not drained, not restarted). A release a host lacks stops the
    run before any host is touched."""
    start, previous = releases(ansible), releases(ansible, "previous")
    target = release_name(previous["app2"])
    assert {release_name(path) for path in previous.values()} == {target}, previous
    ansible("ansible-playbook", "ansible/rollback.yml", "--limit", "app2")
    app2_started = unit_starts(ansible, "app2")

    before, after, stdout = playbook_under_load(
        lab,
        client,
        ansible,
        "rollback by name of app1 and app3 (app2 already on it)",
        "ansible/rollback.yml",
        "-e",
        f"app_rollback_release={target}",
    )
    assert release_name(before["app2"]) == target, before
    assert {release_name(path) for path in after.values()} == {target}, after
    assert f"app2 already runs {target}: left alone." in stdout
    assert recap(stdout, "app2")["changed"] == 0, stdout[-2000:]
    assert unit_starts(ansible, "app2") == app2_started
    assert releases(ansible, "previous") == start  # what each host ran before

    with pytest.raises(AssertionError, match="Release e2e-missing is not installed on app1"):
        ansible(
            "ansible-playbook", "ansible/rollback.yml", "-e", "app_rollback_release=e2e-missing"
        )
    assert releases(ansible) == after


# A runtime drop-in (gone at the next boot) that kills the imports pool's
# interpreter at every start: systemd restarts it every RestartSec, a crash loop.
CRASH_DIR = "/run/systemd/system/queuesvc-worker@imports.service.d"
CRASH_DROPIN = f"{CRASH_DIR}/e2e-crash-loop.conf"


def upstreams_of(client: httpx.Client, n: int = 30) -> Counter[str]:
    """Which upstream (nginx's X-Upstream, address:port) answered n GETs, all 200."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        response = client.get("/health/live")
        assert response.status_code == 200, response.text
        seen[response.headers.get("x-upstream", "missing")] += 1
    return seen


def test_a_crash_looping_worker_stops_the_deploy_with_its_host_drained(
    lab: dict[str, str], client: httpx.Client, ansible: Any
) -> None:
    """The imports pool of app2 crash-loops: app1 takes the new release, app2's
    gate fails (its worker never answers `celery inspect ping`), the deploy stops
    with app2 out of rotation and app3 on its old release. Once the pool is
    fixed, the same deploy finishes."""
    label = f"e2e{int(time.time())}gate"
    before = releases(ansible)
    app2 = json.loads(ansible("ansible-inventory", "--host", "app2").stdout)["ansible_host"]
    deploy = ("ansible/deploy.yml", "-e", f"app_release_label={label}")
    ad_hoc(ansible, "app2", "ansible.builtin.file", f"path={CRASH_DIR} state=directory mode=0755")
    ad_hoc(
        ansible,
        "app2",
        "ansible.builtin.copy",
        json.dumps(
            {
                "dest": CRASH_DROPIN,
                "mode": "0644",
                "content": "[Service]\nEnvironment=PYTHONHOME=/nonexistent\n",
            }
        ),
    )
    try:
        started = time.monotonic()
        with pytest.raises(AssertionError) as failed:
            ansible("ansible-playbook", *deploy, "-e", "app_worker_ready_timeout=20")
        elapsed = time.monotonic() - started
        record(f"deploy stopped by a crash-looping worker on app2 after {elapsed:.0f} s")
        output = str(failed.value)
        assert "app2 is not ready" in output, output
        assert "imports@app2: Error: No nodes replied" in output, output
        assert "NO MORE HOSTS LEFT" in output, output
        after = releases(ansible)
        assert after["app1"].endswith(f"-{label}"), after
        assert after["app2"].endswith(f"-{label}"), after
        assert after["app3"] == before["app3"], (before, after)
        answered = upstreams_of(client)
        record(f"30 GET /health/live with app2 held out: {dict(answered)}")
        assert not any(upstream.startswith(f"{app2}:") for upstream in answered), answered
    finally:
        ad_hoc(ansible, "app2", "ansible.builtin.file", f"path={CRASH_DIR} state=absent")
        ad_hoc(
            ansible,
            "app2",
            "ansible.builtin.systemd_service",
            "name=queuesvc-worker@imports.service state=restarted daemon_reload=true",
        )
        ansible("ansible-playbook", *deploy)
    assert all(path.endswith(f"-{label}") for path in releases(ansible).values())
    assert len(upstreams_of(client)) == 3
