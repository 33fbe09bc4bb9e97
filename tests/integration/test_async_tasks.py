"""Queued work through a real Celery worker: progress, results, cancel, imports."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import redis

from tests.integration.helpers import post_like_curl, submit_process, wait_status
from tests.integration.services import bearer, wait_until


def test_process_reports_progress_then_stores_result_in_mongodb(
    client: httpx.Client, mongo_db: Any
) -> None:
    task_id = submit_process(client, iterations=1500)
    final = wait_status(client, task_id, {"SUCCESS", "FAILURE"})
    assert final["status"] == "SUCCESS", final
    assert "PROGRESS" in final["seen"], final["seen"]
    assert final["progress"] == {"current": 1500, "total": 1500, "progress": 100}
    assert final["result"]["total"] == 1500
    assert final["worker"].startswith("test-")  # the worker's node name
    assert len(final["result"]["processed_items"]) == 100

    # The outcome is claimed in Redis first; MongoDB gets it a moment later.
    stored = wait_until(
        lambda: mongo_db["task_results"].find_one({"_id": task_id}), 10, message="result stored"
    )
    assert stored["status"] == "SUCCESS"
    assert stored["result"] == final["result"]
    assert stored["worker"] == final["worker"]
    result = client.get(f"/api/async/result/{task_id}").json()
    assert result["status"] == "SUCCESS"
    assert result["result"] == final["result"]


def test_tutorial_async_example(client: httpx.Client) -> None:
    response = post_like_curl(
        client, "/api/async/process", b'{"data": "heavy task", "iterations": 100}'
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    final = wait_status(client, task_id, {"SUCCESS"})
    assert final["result"]["total"] == 100


def test_result_survives_loss_of_the_redis_status(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    task_id = submit_process(client, iterations=20)
    wait_status(client, task_id, {"SUCCESS"})
    assert redis_client.delete(f"queuesvc:task:{task_id}") == 1
    status = client.get(f"/api/async/status/{task_id}").json()
    assert status["status"] == "SUCCESS"
    assert status["result"]["total"] == 20
    assert client.get(f"/api/async/result/{task_id}").json()["status"] == "SUCCESS"


def test_unknown_or_malformed_task_id_is_404(client: httpx.Client) -> None:
    for task_id in (str(uuid.uuid4()), "not-a-task"):
        for path in (f"/api/async/status/{task_id}", f"/api/async/result/{task_id}"):
            response = client.get(path)
            assert response.status_code == 404, response.text
            assert "not found" in response.json()["detail"]
        assert client.delete(f"/api/async/{task_id}").status_code == 404


def test_result_of_unfinished_task_is_409(client: httpx.Client) -> None:
    task_id = submit_process(client, iterations=3000)
    response = client.get(f"/api/async/result/{task_id}")
    assert response.status_code == 409, response.text
    client.delete(f"/api/async/{task_id}")


def test_bad_process_input_is_422(client: httpx.Client) -> None:
    for body in (
        {"data": "x", "iterations": 0},
        {"data": "x", "iterations": 10**9},
        {"data": "x"},
        {"iterations": 5},
        {"data": "x", "iterations": 5, "extra": 1},
        {"data": "x", "iterations": "many"},
    ):
        response = client.post("/api/async/process", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"]


def test_cancel_running_task(client: httpx.Client, mongo_db: Any) -> None:
    task_id = submit_process(client, iterations=10_000)
    wait_status(client, task_id, {"PROGRESS"})
    response = client.delete(f"/api/async/{task_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "REVOKED"
    # The worker notices at its next progress report and records the outcome.
    result = wait_until(
        lambda: client.get(f"/api/async/result/{task_id}").json().get("status"),
        10,
        message="REVOKED result stored",
    )
    assert result == "REVOKED"
    status = client.get(f"/api/async/status/{task_id}").json()
    assert status["status"] == "REVOKED"
    assert status["progress"]["current"] < 10_000
    assert client.delete(f"/api/async/{task_id}").status_code == 409


def test_cancel_finished_task_is_409(client: httpx.Client) -> None:
    task_id = submit_process(client, iterations=5)
    wait_status(client, task_id, {"SUCCESS"})
    response = client.delete(f"/api/async/{task_id}")
    assert response.status_code == 409
    assert "already finished" in response.json()["detail"]


def _upload(
    client: httpx.Client, text: str, name: str = "items.csv", content_type: str = "text/csv"
) -> httpx.Response:
    return client.post(
        "/api/async/import", files={"file": (name, io.BytesIO(text.encode()), content_type)}
    )


def test_csv_import_twice_creates_no_duplicates(client: httpx.Client, mongo_db: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    rows = [f"{tag}-{n},{tag} item {n},row {n}" for n in range(1, 8)]
    text = (
        "\n".join(
            [
                "external_id,name,description",
                *rows,
                f",{tag} nameless id,",  # row 9: empty external id
                f"{tag}-9,,no name",  # row 10: empty name
                f"{tag}-1,{tag} again,dup",  # row 11: repeats row 2
                f"{tag}-10,{tag} x,y,surplus",  # row 12: too many fields
                f"{tag}-11," + "n" * 201 + ",",  # row 13: name too long
            ]
        )
        + "\n"
    )

    def run() -> dict[str, Any]:
        response = _upload(client, text)
        assert response.status_code == 202, response.text
        final = wait_status(client, response.json()["task_id"], {"SUCCESS", "FAILURE"})
        assert final["status"] == "SUCCESS", final
        result: dict[str, Any] = final["result"]
        return result

    first = run()
    assert (first["inserted"], first["updated"]) == (7, 0)
    rejected = {entry["row"]: entry["reason"] for entry in first["rejected"]}
    assert set(rejected) == {9, 10, 11, 12, 13}, first["rejected"]
    assert "external_id is empty" in rejected[9]
    assert "name is empty" in rejected[10]
    assert "repeats row 2" in rejected[11]
    assert "more fields" in rejected[12]
    assert "longer than 200" in rejected[13]

    second = run()
    assert (second["inserted"], second["updated"]) == (0, 7)
    assert len(second["rejected"]) == 5
    assert mongo_db["items"].count_documents({"external_id": {"$regex": f"^{tag}-"}}) == 7
    listed = client.get("/api/items", params={"name_prefix": f"{tag} item", "limit": 100})
    assert len(listed.json()["items"]) == 7


def test_non_csv_uploads_are_refused(client: httpx.Client) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    response = client.post(
        "/api/async/import", files={"file": ("photo.png", io.BytesIO(png), "image/png")}
    )
    assert response.status_code == 415, response.text
    response = client.post(
        "/api/async/import", files={"file": ("data.csv", io.BytesIO(png), "text/csv")}
    )
    assert response.status_code == 415, response.text
    response = _upload(client, "id,title\n1,x\n")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "csv_format"
    assert error["loc"] == ["body", "file"]
    assert "external_id" in error["msg"]
    response = _upload(client, "")
    assert response.status_code == 422
    response = client.post("/api/async/import", json={"external_id": "1"})
    assert response.status_code == 422
    big = "external_id,name\n" + "a,b\n" * (2 * 1024 * 1024)
    assert _upload(client, big).status_code == 413


def test_a_burst_past_the_in_flight_limit_is_shed_cleanly(
    api: str, worker: Any, api_keys: dict[str, Any]
) -> None:
    """400 submits at once to 2 processes that run 64 each (APP_MAX_IN_FLIGHT): what
    they cannot run is refused at once with the shed 503, the rest is accepted."""
    import asyncio

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=400)
        async with httpx.AsyncClient(
            base_url=api, timeout=30, limits=limits, headers=bearer(api_keys["user"])
        ) as http:
            return await asyncio.gather(
                *(
                    http.post("/api/async/process", json={"data": f"b{n}", "iterations": 1})
                    for n in range(400)
                )
            )

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {202, 503}, sorted(set(codes))
    assert codes.count(202) >= 64, codes.count(202)
    for shed in (r for r in responses if r.status_code == 503):
        assert shed.json() == {"detail": "the server is busy; try again shortly"}
        assert int(shed.headers["retry-after"]) >= 1
    # The slots come back: the next submit is accepted.
    after = httpx.post(
        f"{api}/api/async/process",
        json={"data": "after", "iterations": 1},
        headers=bearer(api_keys["user"]),
    )
    assert after.status_code == 202, after.text
