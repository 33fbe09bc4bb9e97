"""API keys against the real API: 401/403, scopes, revocation on every process at
once, expiry, tenants, operators' endpoints, the `keys` command, and no key in a log."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import submit_process, wait_status
from tests.integration.services import bearer, create_key


def outsider(api: str) -> httpx.Client:
    """A caller outside APP_OPS_NETWORKS (127.0.0.1): loopback has all of 127/8."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    return httpx.Client(base_url=api, transport=transport, timeout=10)


def _keys_command(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "keys", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_key_or_a_bad_one_is_401_json_and_counted(api: str, client: httpx.Client) -> None:
    cases = {
        "missing": {},
        "malformed": {"Authorization": "Basic dXNlcjpwYXNz"},
        "unknown": {"Authorization": "Bearer qsk_0123456789abcdef_" + "A" * 43},
    }
    for reason, headers in cases.items():
        response = httpx.get(f"{api}/api/items", headers=headers)
        assert response.status_code == 401, (reason, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert isinstance(response.json()["detail"], str)
    metrics = client.get("/metrics").text
    for reason in cases:
        assert f'queuesvc_auth_failures_total{{reason="{reason}"}}' in metrics


def test_a_missing_scope_is_403(api: str, api_keys: dict[str, Any], client: httpx.Client) -> None:
    reader = bearer(api_keys["reader"])
    refused = httpx.post(
        f"{api}/api/async/process", json={"data": "x", "iterations": 1}, headers=reader
    )
    assert refused.status_code == 403
    assert refused.json() == {"detail": "the API key lacks the tasks:submit scope"}
    assert httpx.get(f"{api}/api/items", headers=reader).status_code == 403
    assert 'queuesvc_auth_failures_total{reason="scope"}' in client.get("/metrics").text
    # What the scope allows works.
    task_id = submit_process(client, 1)
    assert httpx.get(f"{api}/api/async/status/{task_id}", headers=reader).status_code == 200


def test_liveness_needs_no_key(api: str) -> None:
    with outsider(api) as http:
        assert http.get("/health/live").json() == {"status": "alive"}


def test_revocation_takes_effect_at_once_on_every_process(
    api: str, app_env: dict[str, str], worker: Any
) -> None:
    key = create_key(app_env, "revoked-soon", "items:read")
    with httpx.Client(base_url=api, headers=bearer(key), timeout=10) as http:
        # Both gunicorn workers see (and cache) the key.
        assert all(http.get("/api/items").status_code == 200 for _ in range(20))
        done = _keys_command(app_env, "revoke", key["id"])
        assert done.returncode == 0, done.stderr
        assert "revoked" in done.stdout
        time.sleep(0.2)  # the announcement's trip through Redis pub/sub
        codes = {http.get("/api/items").status_code for _ in range(20)}
    assert codes == {401}


def test_an_expired_key_is_401(api: str, app_env: dict[str, str], mongo_db: Any) -> None:
    key = create_key(app_env, "short-lived", "items:read", "--expires", "1h")
    mongo_db["api_keys"].update_one(
        {"_id": key["id"]}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    response = httpx.get(f"{api}/api/items", headers=bearer(key))
    assert response.status_code == 401
    assert response.json() == {"detail": "the API key is expired"}


def test_another_owners_item_is_404_and_admin_sees_it(
    api: str, api_keys: dict[str, Any], client: httpx.Client, admin_client: httpx.Client
) -> None:
    item = client.post("/api/items", json={"name": "tenant-a thing"}).json()
    with httpx.Client(base_url=api, headers=bearer(api_keys["other"]), timeout=10) as other:
        assert other.get(f"/api/items/{item['id']}").status_code == 404
        assert other.patch(f"/api/items/{item['id']}", json={"name": "x"}).status_code == 404
        assert other.delete(f"/api/items/{item['id']}").status_code == 404
        listed = other.get("/api/items", params={"name_prefix": "tenant-a"}).json()["items"]
        assert listed == []
    assert admin_client.get(f"/api/items/{item['id']}").json()["name"] == "tenant-a thing"
    assert client.get(f"/api/items/{item['id']}").status_code == 200


def test_another_owners_task_is_404_and_admin_sees_it(
    api: str, api_keys: dict[str, Any], client: httpx.Client, admin_client: httpx.Client
) -> None:
    task_id = submit_process(client, 1)
    wait_status(client, task_id, {"SUCCESS"})
    with httpx.Client(base_url=api, headers=bearer(api_keys["other"]), timeout=10) as other:
        for path in (f"/api/async/status/{task_id}", f"/api/async/result/{task_id}"):
            assert other.get(path).status_code == 404
        assert other.delete(f"/api/async/{task_id}").status_code == 404
    assert admin_client.get(f"/api/async/result/{task_id}").json()["status"] == "SUCCESS"


def test_idempotency_keys_are_each_owners_own(
    api: str, api_keys: dict[str, Any], client: httpx.Client
) -> None:
    body = {"data": "same", "iterations": 1}
    headers = {"Idempotency-Key": f"shared-{time.time_ns()}"}
    first = client.post("/api/async/process", json=body, headers=headers)
    other = httpx.post(
        f"{api}/api/async/process", json=body, headers={**headers, **bearer(api_keys["other"])}
    )
    assert first.status_code == other.status_code == 202
    assert first.json()["task_id"] != other.json()["task_id"]


def test_one_external_id_is_an_item_per_owner(
    api: str, api_keys: dict[str, Any], client: httpx.Client
) -> None:
    external_id = f"shared-{time.time_ns()}"

    def imported(http: httpx.Client, name: str) -> dict[str, Any]:
        text = f"external_id,name\n{external_id},{name}\n"
        files = {"file": ("items.csv", io.BytesIO(text.encode()), "text/csv")}
        response = http.post("/api/async/import", files=files)
        assert response.status_code == 202, response.text
        final = wait_status(http, response.json()["task_id"], {"SUCCESS", "FAILURE"})
        assert final["status"] == "SUCCESS", final
        result: dict[str, Any] = final["result"]
        return result

    def named(http: httpx.Client) -> list[str]:
        items = http.get("/api/items", params={"limit": 100}).json()["items"]
        return [item["name"] for item in items if item["external_id"] == external_id]

    with httpx.Client(base_url=api, headers=bearer(api_keys["other"]), timeout=10) as other:
        assert imported(client, "mine")["inserted"] == 1
        assert imported(other, "theirs")["inserted"] == 1  # not the first owner's item
        again = imported(client, "mine again")
        assert (again["inserted"], again["updated"]) == (0, 1)
        assert named(client) == ["mine again"]
        assert named(other) == ["theirs"]


@pytest.mark.parametrize("path", ["/health", "/metrics", "/openapi.json", "/docs"])
def test_operators_endpoints_need_the_ops_network_or_an_admin_key(
    api: str, api_keys: dict[str, Any], worker: Any, path: str
) -> None:
    with outsider(api) as http:
        assert http.get(path).status_code == 401
        assert http.get(path, headers=bearer(api_keys["user"])).status_code == 403
        assert http.get(path, headers=bearer(api_keys["admin"])).status_code == 200
    assert httpx.get(f"{api}{path}", timeout=10).status_code == 200  # from 127.0.0.1


def test_keys_command_lists_without_secrets_and_seeds_idempotently(
    app_env: dict[str, str], api: str
) -> None:
    made = create_key(app_env, "listed", "tasks:read")
    listing = _keys_command(app_env, "list", "--owner", "listed")
    assert made["id"] in listing.stdout
    assert made["key"] not in listing.stdout
    assert "hash" not in listing.stdout
    assert _keys_command(app_env, "revoke", "0000000000000000").returncode == 1
    bad = _keys_command(app_env, "create", "--owner", "Bad Owner!", "--scopes", "tasks:read")
    assert bad.returncode == 2
    assert "owner" in bad.stderr
    unknown = _keys_command(app_env, "create", "--owner", "x", "--scopes", "tasks:everything")
    assert unknown.returncode == 2
    assert "unknown scope" in unknown.stderr

    vault_key = "qsk_" + "ab" * 8 + "_" + "s" * 43
    seed = ["seed", "--owner", "seeded", "--name", "from-vault", "--scopes", "items:read"]
    first = _keys_command(app_env, *seed, stdin=vault_key + "\n")
    again = _keys_command(app_env, *seed, stdin=vault_key + "\n")
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.startswith("changed")
    assert not again.stdout.startswith("changed")
    assert vault_key not in first.stdout + again.stdout
    assert httpx.get(
        f"{api}/api/items", headers={"Authorization": f"Bearer {vault_key}"}
    ).is_success


def test_no_key_appears_in_a_log(
    api_keys: dict[str, Any], workdir: Path, client: httpx.Client
) -> None:
    client.get("/api/items")
    logs = "".join(path.read_text(errors="replace") for path in workdir.glob("*.log"))
    assert logs, "no log written"
    for key in api_keys.values():
        assert key["key"] not in logs
