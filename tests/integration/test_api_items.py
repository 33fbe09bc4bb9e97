"""Health and item routes against the API under gunicorn, on real services."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.expected import HEALTHY
from tests.integration.helpers import post_like_curl

JSON_TYPE = {"content-type": "application/json"}


def test_health_reports_every_service_connected(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == HEALTHY


def test_liveness_touches_no_dependency(client: httpx.Client) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}


def test_tutorial_create_item_example(client: httpx.Client) -> None:
    response = post_like_curl(client, "/api/items", b'{"name": "Test Item"}')
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["name"] == "Test Item"
    assert set(item) >= {"id", "name", "description", "created_at", "updated_at"}


def test_item_crud_round_trip(client: httpx.Client) -> None:
    created = client.post("/api/items", json={"name": "lamp", "description": "brass"}).json()
    item_id = created["id"]
    assert client.get(f"/api/items/{item_id}").json() == created

    patched = client.patch(f"/api/items/{item_id}", json={"description": "copper"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "copper"
    assert patched.json()["name"] == "lamp"
    assert patched.json()["updated_at"] >= created["updated_at"]

    assert client.delete(f"/api/items/{item_id}").status_code == 204
    gone = client.get(f"/api/items/{item_id}")
    assert gone.status_code == 404
    assert "not found" in gone.json()["detail"]
    assert client.delete(f"/api/items/{item_id}").status_code == 404


def test_listing_is_newest_first_with_cursor_and_prefix(client: httpx.Client) -> None:
    prefix = f"list-{uuid.uuid4().hex[:6]}-"
    ids = [client.post("/api/items", json={"name": f"{prefix}{n}"}).json()["id"] for n in range(5)]
    client.post("/api/items", json={"name": "unrelated"})

    first = client.get("/api/items", params={"name_prefix": prefix, "limit": 3}).json()
    assert [i["id"] for i in first["items"]] == ids[::-1][:3]
    assert first["next_cursor"] == ids[2]
    second = client.get(
        "/api/items", params={"name_prefix": prefix, "limit": 3, "cursor": first["next_cursor"]}
    ).json()
    assert [i["id"] for i in second["items"]] == ids[::-1][3:]
    assert second["next_cursor"] is None


def _assert_json_error(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["detail"]


def test_bad_item_input_is_a_clear_4xx(client: httpx.Client) -> None:
    _assert_json_error(client.post("/api/items", json={"name": ""}), 422)
    _assert_json_error(client.post("/api/items", json={"name": "x" * 201}), 422)
    _assert_json_error(client.post("/api/items", json={"name": "ok", "colour": "red"}), 422)
    _assert_json_error(client.post("/api/items", content=b"{not json"), 422)
    _assert_json_error(
        client.post(
            "/api/items",
            content=b"name=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        422,
    )
    _assert_json_error(client.get("/api/items", params={"limit": 101}), 422)
    _assert_json_error(client.get("/api/items", params={"cursor": "nope"}), 422)
    item = client.post("/api/items", json={"name": "keep"}).json()
    _assert_json_error(client.patch(f"/api/items/{item['id']}", json={}), 422)
    _assert_json_error(client.patch(f"/api/items/{item['id']}", json={"name": None}), 422)


def test_malformed_or_unknown_id_is_404_json(client: httpx.Client) -> None:
    for item_id in ("not-an-id", "0" * 24, "6b0d" * 6, "%00"):
        for method in ("GET", "DELETE"):
            _assert_json_error(client.request(method, f"/api/items/{item_id}"), 404)
        _assert_json_error(client.patch(f"/api/items/{item_id}", json={"name": "x"}), 404)


def test_ten_megabyte_body_is_refused_with_413(client: httpx.Client) -> None:
    body = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    detail = _assert_json_error(client.post("/api/items", content=body), 413)
    assert "larger than" in detail


def test_streamed_oversized_body_is_refused_with_413(client: httpx.Client) -> None:
    def chunks() -> Any:  # no Content-Length: the limit applies while reading
        for _ in range(40):
            yield b"x" * 65536

    _assert_json_error(client.post("/api/items", content=chunks()), 413)


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    _assert_json_error(client.get("/api/nothing-here"), 404)


def test_metrics_count_requests_by_route_template(client: httpx.Client) -> None:
    item = client.post("/api/items", json={"name": "metered"}).json()
    client.get(f"/api/items/{item['id']}")
    text = client.get("/metrics").text
    assert 'route="/api/items/{item_id}"' in text
    assert "queuesvc_http_request_duration_seconds_bucket" in text
    assert item["id"] not in text  # raw paths never become labels


def test_openapi_documents_the_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/items",
        "/api/items/{item_id}",
        "/api/async/process",
        "/api/async/import",
        "/api/async/status/{task_id}",
        "/api/async/result/{task_id}",
        "/health",
    } <= set(paths)
    assert client.get("/docs").status_code == 200


def test_undecodable_body_is_a_json_400(client: httpx.Client) -> None:
    detail = _assert_json_error(
        client.post("/api/items", content=b'{"name": "\xff"}', headers=JSON_TYPE), 400
    )
    assert isinstance(detail, str)


def test_unsupported_method_names_every_method_of_the_path(client: httpx.Client) -> None:
    response = client.request("OPTIONS", "/api/items/0")
    _assert_json_error(response, 405)
    assert response.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    response = client.request("PUT", "/api/items")
    _assert_json_error(response, 405)
    assert response.headers["allow"] == "GET, HEAD, POST"
    # The concrete path, not /api/async/{task_id} (DELETE) that also matches it.
    response = client.request("OPTIONS", "/api/async/dead")
    _assert_json_error(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


def test_bad_cursor_is_a_validation_error_list(client: httpx.Client) -> None:
    [error] = _assert_json_error(client.get("/api/items", params={"cursor": "0" * 23}), 422)
    assert error["loc"] == ["query", "cursor"]
