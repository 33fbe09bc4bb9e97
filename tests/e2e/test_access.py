"""Who may call the deployed API, through lb1: keys, scopes, tenants, quotas and
the operators' endpoints, with keys made and revoked by the `keys` command on
an app server as an operator would."""

from __future__ import annotations

import asyncio
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
FLOOD = 160  # submits of one tenant at once: past its burst of 100


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


def test_over_the_rate_quota_is_429_with_retry_after_and_other_tenants_go_on(
    lab: dict[str, str], client: httpx.Client, ansible: Any
) -> None:
    """lb1 does not limit this machine (nginx_limits_exempt): the API's quota,
    shared by the three app servers through Redis, is what answers 429."""
    made = make_key(ansible, f"e2e-flood-{uuid.uuid4().hex[:6]}", "tasks:submit")
    body = {"data": "quota", "iterations": 1}

    async def flood() -> list[httpx.Response]:
        # At once, so that little refills meanwhile (20 a second).
        async with httpx.AsyncClient(
            base_url=lab["url"],
            verify=_verify(lab),
            timeout=30,
            headers=bearer(made["key"]),
            limits=httpx.Limits(max_connections=40),
        ) as http:
            return await asyncio.gather(
                *(http.post("/api/async/process", json=body) for _ in range(FLOOD))
            )

    answers = asyncio.run(flood())
    codes = Counter(r.status_code for r in answers)
    upstreams = Counter(r.headers.get("x-upstream") for r in answers if r.status_code == 429)
    record(
        f"{FLOOD} submits at once of one tenant through lb1: {dict(codes)}; "
        f"429s by {dict(upstreams)}"
    )
    # The burst (100) and what refills meanwhile pass; the rest are refused.
    assert codes[202] >= 100, codes
    assert codes[429] >= 20, codes
    assert set(codes) <= {202, 429}, codes
    refused = next(r for r in answers if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert "submit rate" in refused.json()["detail"]
    assert len(upstreams) >= 2, upstreams  # one bucket, however the requests spread
    assert client.post("/api/async/process", json=body).status_code == 202
