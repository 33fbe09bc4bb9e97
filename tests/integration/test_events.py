"""GET /api/async/events/{id}: Server-Sent Events from the real API, worker and Redis."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from app import sse
from app.schemas import TaskState
from app.status import SyncStatusStore, task_key
from tests.integration.helpers import submit_process, wait_status
from tests.integration.services import (
    bearer,
    free_port,
    gunicorn_api,
    wait_http_ok,
    wait_until,
)

# The `user` key's owner (conftest.api_keys).
OWNER = "tester"


def read_stream(
    client: httpx.Client, task_id: str, *, last_event_id: str | None = None, limit: int = 10_000
) -> Iterator[sse.Event | str]:
    """The stream's events, and its comment lines as strings, until it ends (or `limit`)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    with client.stream("GET", f"/api/async/events/{task_id}", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        parser = sse.Parser()
        seen = 0
        for line in response.iter_lines():
            if line.startswith(":"):
                yield line
                continue
            event = parser.feed(line)
            if event is not None:
                yield event
                seen += 1
                if seen >= limit:
                    return


def events_of(items: Iterator[sse.Event | str]) -> list[sse.Event]:
    return [item for item in items if isinstance(item, sse.Event)]


def body(event: sse.Event) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event.data)
    return data


def idle_record(redis_client: redis.Redis, owner: str = OWNER) -> str:
    """A PENDING record no worker will run: the test moves it with the real status script."""
    task_id = str(uuid.uuid4())
    redis_client.hset(
        task_key(task_id),
        mapping={"name": "test.idle", "status": "PENDING", "current": 0, "total": 4},
    )
    redis_client.hset(task_key(task_id), "owner", owner)
    redis_client.expire(task_key(task_id), 600)
    return task_id


def test_stream_sends_state_then_progress_then_final_with_result_and_closes(
    client: httpx.Client,
) -> None:
    task_id = submit_process(client, iterations=1500)
    events = events_of(read_stream(client, task_id))
    kinds = [event.event for event in events]
    states = [body(event)["status"] for event in events]
    assert kinds[-1] == "final", kinds
    assert set(kinds[:-1]) == {"status"}, kinds
    assert states[0] in {"PENDING", "STARTED", "PROGRESS"}, states
    assert "PROGRESS" in states, states
    final = body(events[-1])
    assert final["status"] == "SUCCESS"
    assert final["result"]["total"] == 1500
    ids = [int(event.id or "-1") for event in events]
    assert ids == sorted(set(ids)), ids  # numbered, each change once, in order
    done = [body(event)["progress"]["current"] for event in events if event.event == "status"]
    assert done == sorted(done), done


def test_resume_with_last_event_id_sends_only_newer_states(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    task_id = idle_record(redis_client)
    worker = SyncStatusStore(redis_client, 600, 600)
    worker.update(task_id, status=TaskState.STARTED.value, current=0, total=4)
    first = events_of(read_stream(client, task_id, limit=1))
    assert body(first[0])["status"] == "STARTED"
    seen = first[0].id
    assert seen is not None

    # The client is away while the task moves on; it comes back with its last id.
    worker.update(task_id, status=TaskState.PROGRESS.value, current=2, total=4)
    resumed = events_of(read_stream(client, task_id, last_event_id=seen, limit=1))
    assert int(resumed[0].id or "0") > int(seen)
    assert body(resumed[0])["progress"]["current"] == 2

    # Up to date: nothing is repeated, the next event is the next change.
    stream = read_stream(client, task_id, last_event_id=resumed[0].id)
    worker.settle(task_id, TaskState.SUCCESS, result={"ok": True}, current=4, total=4)
    rest = events_of(stream)
    assert [event.event for event in rest] == ["final"], rest
    assert body(rest[0])["result"] == {"ok": True}


def test_changes_are_pushed_and_an_idle_stream_gets_heartbeats(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    task_id = idle_record(redis_client)
    stream = read_stream(client, task_id)
    first = next(stream)
    assert isinstance(first, sse.Event)
    assert body(first)["status"] == "PENDING"
    # APP_EVENTS_HEARTBEAT_SECONDS is 1 in the tests: the next line is a comment.
    assert next(stream) == ": ping"
    SyncStatusStore(redis_client, 600, 600).settle(task_id, TaskState.FAILURE, error="boom")
    rest = events_of(stream)
    assert [(e.event, body(e)["status"], body(e)["error"]) for e in rest] == [
        ("final", "FAILURE", "boom")
    ]


def test_a_finished_task_gets_its_final_event_from_redis_or_mongodb(
    client: httpx.Client, redis_client: redis.Redis, mongo_db: Any
) -> None:
    task_id = submit_process(client, iterations=20)
    wait_status(client, task_id, {"SUCCESS"})
    events = events_of(read_stream(client, task_id))
    assert [event.event for event in events] == ["final"]
    assert body(events[0])["result"]["total"] == 20
    assert events[0].id is not None

    wait_until(
        lambda: mongo_db["task_results"].find_one({"_id": task_id}), 10, message="result stored"
    )
    assert redis_client.delete(task_key(task_id)) == 1
    stored = events_of(read_stream(client, task_id))
    assert [event.event for event in stored] == ["final"]
    assert body(stored[0])["result"]["total"] == 20
    assert stored[0].id is None  # nothing can follow it


def test_a_cancelled_task_ends_its_stream_with_revoked(client: httpx.Client) -> None:
    task_id = submit_process(client, iterations=10_000)
    stream = read_stream(client, task_id)
    assert isinstance(next(stream), sse.Event)
    assert client.delete(f"/api/async/{task_id}").status_code == 200
    events = events_of(stream)
    assert events[-1].event == "final"
    assert body(events[-1])["status"] == "REVOKED"


def test_unknown_malformed_and_other_owners_tasks_are_404(
    client: httpx.Client, api: str, api_keys: dict[str, dict[str, Any]], redis_client: redis.Redis
) -> None:
    mine = idle_record(redis_client)
    for task_id in (str(uuid.uuid4()), "not-a-task"):
        response = client.get(f"/api/async/events/{task_id}")
        assert response.status_code == 404, response.text
        assert "not found" in response.json()["detail"]
    with httpx.Client(base_url=api, timeout=15, headers=bearer(api_keys["other"])) as other:
        response = other.get(f"/api/async/events/{mine}")
        assert response.status_code == 404, response.text
    # The owner's read-only key follows it; the admin too.
    for role in ("reader", "admin"):
        with httpx.Client(base_url=api, timeout=15, headers=bearer(api_keys[role])) as reader:
            first = events_of(read_stream(reader, mine, limit=1))
            assert body(first[0])["task_id"] == mine


def test_no_key_is_401(api: str, redis_client: redis.Redis) -> None:
    task_id = idle_record(redis_client)
    response = httpx.get(f"{api}/api/async/events/{task_id}", timeout=15)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_stopping_worker_ends_its_streams_cleanly(
    app_env: dict[str, str],
    workdir: Path,
    api_keys: dict[str, dict[str, Any]],
    redis_client: redis.Redis,
) -> None:
    """gunicorn waits up to 30 s for open responses; streams end at once instead, whole
    (no cut chunk), and the client resumes elsewhere with its Last-Event-ID."""
    port = free_port()
    own = gunicorn_api(
        {**app_env, "APP_EVENTS_HEARTBEAT_SECONDS": "60"}, workdir / "api-drain.log", port
    )
    own.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(base + "/health/live")
        task_id = idle_record(redis_client)
        with httpx.Client(base_url=base, timeout=60, headers=bearer(api_keys["user"])) as http:
            stream = read_stream(http, task_id)
            assert isinstance(next(stream), sse.Event)
            assert own.proc is not None
            own.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            rest = list(stream)  # raises if the response is cut rather than ended
        assert rest == []
        assert own.proc.wait(60) == 0, own.tail()
        print(f"stream ended {time.monotonic() - started:.2f} s after SIGTERM")
    finally:
        own.stop()


def test_a_malformed_last_event_id_is_422(client: httpx.Client, redis_client: redis.Redis) -> None:
    task_id = idle_record(redis_client)
    headers = {"Last-Event-ID": "not-a-number"}
    response = client.get(f"/api/async/events/{task_id}", headers=headers)
    assert response.status_code == 422, response.text
