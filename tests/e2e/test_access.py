"""Who may call the deployed API, through lb1: keys, scopes, tenants, quotas and
the operators' endpoints, with keys made and revoked by the `keys` command on
an app server as an operator would."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from tests.e2e.conftest import _verify, bearer, record

# The `keys` command as the units run the service: its user, its environment file.
KEYS_COMMAND = (
    "systemd-run --quiet --wait --pipe --collect --uid=queuesvc --gid=queuesvc"
    " --working-directory=/opt/queuesvc/current"
    " --property=EnvironmentFile=/etc/queuesvc/queuesvc.env"
    " /opt/queuesvc/current/venv/bin/python -m app keys"
)
SPREAD = 30  # requests enough for lb1 to reach every app server
IN_FLIGHT_TASKS = 20  # x 10,000 iteration-steps: the default in-flight quota


def keys_command(ansible: Any, host: str, arguments: str) -> str:
    result = ansible(
        "ansible", host, "-b", "-m", "ansible.builtin.command", "-a", f"{KEYS_COMMAND} {arguments}"
    )
    # "app1 | CHANGED | rc=0 >>" and then the command's output.
    return str(result.stdout).split(">>", 1)[1].strip()


def make_key(ansible: Any, owner: str, scopes: str) -> dict[str, Any]:
    made: dict[str, Any] = json.loads(
        keys_command(ansible, "app1", f"create --owner {owner} --scopes {scopes} --json")
    )
    return made


def client_for(lab: dict[str, str], key: str | None) -> httpx.Client:
    headers = bearer(key) if key else {}
    return httpx.Client(base_url=lab["url"], verify=_verify(lab), timeout=15, headers=headers)


def test_without_a_key_or_with_a_bad_one_every_route_is_401(lab: dict[str, str]) -> None:
    bad_key = f"qsk_{'0' * 16}_{'A' * 43}"
    for key in (None, bad_key):
        with client_for(lab, key) as http:
            for method, path in (
                ("GET", "/api/items"),
                ("POST", "/api/async/process"),
                ("GET", f"/api/async/status/{uuid.uuid4()}"),
                ("GET", "/health"),  # through lb1 the API sees lb1, not an operator
            ):
                response = http.request(method, path, json={"data": "x", "iterations": 1})
                assert response.status_code == 401, (key, method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert isinstance(response.json()["detail"], str)
            # Liveness stays open, for nginx and monitors.
            assert http.get("/health/live").status_code == 200


def test_a_missing_scope_is_403_and_admin_sees_every_tenant(
    client: httpx.Client, admin_client: httpx.Client
) -> None:
    assert client.get("/api/async/dead").status_code == 403  # admin only
    assert client.get("/health").status_code == 403
    mine = client.post("/api/items", json={"name": f"tenant-{uuid.uuid4().hex[:6]}"}).json()
    theirs = admin_client.post("/api/items", json={"name": "ops-only"}).json()
    try:
        # Another owner's item is unknown, never forbidden.
        assert client.get(f"/api/items/{theirs['id']}").status_code == 404
        assert client.delete(f"/api/items/{theirs['id']}").status_code == 404
        assert admin_client.get(f"/api/items/{mine['id']}").status_code == 200
        assert admin_client.get("/api/async/dead").status_code == 200
    finally:
        admin_client.delete(f"/api/items/{mine['id']}")
        admin_client.delete(f"/api/items/{theirs['id']}")


def test_a_key_revoked_on_one_app_server_is_refused_at_once_by_all(
    lab: dict[str, str], ansible: Any
) -> None:
    made = make_key(ansible, f"e2e-revoke-{uuid.uuid4().hex[:6]}", "items:read")
    with client_for(lab, made["key"]) as http:
        before = Counter(
            (r.status_code, r.headers.get("x-upstream"))
            for r in (http.get("/api/items") for _ in range(SPREAD))
        )
        assert {code for code, _ in before} == {200}, before
        assert len({upstream for _, upstream in before}) == 3, before
        keys_command(ansible, "app1", f"revoke {made['id']}")
        revoked = time.monotonic()
        after = Counter(http.get("/api/items").status_code for _ in range(SPREAD))
        elapsed = time.monotonic() - revoked
    record(
        f"key revoked on app1: next {SPREAD} requests through lb1 in {elapsed:.1f} s: {dict(after)}"
    )
    assert after == {401: SPREAD}, after


def test_over_its_in_flight_quota_a_tenant_gets_429_from_every_app_server(
    lab: dict[str, str], client: httpx.Client, ansible: Any
) -> None:
    """The quota is the tenant's, shared by the three app servers through Redis:
    with 200,000 iteration-steps unfinished (the default cap), the next submit
    is a 429 whichever server takes it, and a cancel gives the cost back. lb1
    does not limit this machine (nginx_limits_exempt): the API answers."""
    made = make_key(ansible, f"e2e-quota-{uuid.uuid4().hex[:6]}", "tasks:submit,tasks:read")
    heavy = {"data": "quota", "iterations": 10_000}
    with client_for(lab, made["key"]) as http:
        accepted = [http.post("/api/async/process", json=heavy) for _ in range(IN_FLIGHT_TASKS)]
        try:
            assert {r.status_code for r in accepted} == {202}, [r.text for r in accepted]
            refused = [http.post("/api/async/process", json=heavy) for _ in range(SPREAD)]
            codes = Counter(r.status_code for r in refused)
            upstreams = Counter(r.headers.get("x-upstream") for r in refused)
            record(
                f"{SPREAD} submits over the in-flight quota through lb1: {dict(codes)} "
                f"by {dict(upstreams)}"
            )
            assert codes == {429: SPREAD}, codes
            assert len(upstreams) == 3, upstreams
            assert int(refused[0].headers["retry-after"]) >= 1
            assert "unfinished tasks" in refused[0].json()["detail"]
        finally:
            for answer in accepted:
                if answer.status_code == 202:
                    http.delete(f"/api/async/{answer.json()['task_id']}")
        # The cancels gave the cost back; other tenants were never affected.
        again = http.post("/api/async/process", json=heavy)
        assert again.status_code == 202, again.text
        http.delete(f"/api/async/{again.json()['task_id']}")
    assert client.post("/api/async/process", json={"data": "x", "iterations": 1}).status_code == 202
