"""The `queuesvc` command-line client against the real API, worker and event stream."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.schemas import TaskState
from app.status import SyncStatusStore, events_channel, task_key
from tests.integration.helpers import submit_process
from tests.integration.services import Process, free_port, gunicorn_api, wait_http_ok, wait_until

CLI = [sys.executable, "-m", "app.cli"]


@pytest.fixture
def cli_env(api: str, api_keys: dict[str, dict[str, Any]]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUESVC_")}
    env.update({"QUEUESVC_URL": api, "QUEUESVC_API_KEY": api_keys["user"]["key"]})
    return env


def queuesvc(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("queuesvc: "), lines
    return lines[0]


def test_submit_wait_shows_the_result_and_exits_0(
    cli_env: dict[str, str], client: httpx.Client
) -> None:
    done = queuesvc(cli_env, "submit", "--data", "hello", "--iterations", "200", "--wait")
    assert done.returncode == 0, done.stderr
    assert "SUCCESS" in done.stdout
    assert '"total": 200' in done.stdout


def test_json_output_is_one_document_per_command(
    cli_env: dict[str, str], client: httpx.Client
) -> None:
    done = queuesvc(cli_env, "submit", "--data", "x", "--iterations", "30", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout)
    assert final["status"] == "SUCCESS"
    assert final["result"]["total"] == 30
    task_id = final["task_id"]

    status = json.loads(queuesvc(cli_env, "--json", "status", task_id).stdout)
    assert (status["task_id"], status["status"]) == (task_id, "SUCCESS")
    result = json.loads(queuesvc(cli_env, "result", task_id, "--json").stdout)
    assert result["result"] == final["result"]

    queued = queuesvc(cli_env, "submit", "--data", "x", "--iterations", "5", "--json")
    assert json.loads(queued.stdout)["status"] == "PENDING"


def test_import_wait_reports_the_rows(
    cli_env: dict[str, str], client: httpx.Client, tmp_path: Path
) -> None:
    csv = tmp_path / "items.csv"
    owner_unique = uuid.uuid4().hex[:8]
    csv.write_text(f"external_id,name\ncli-{owner_unique}-1,one\ncli-{owner_unique}-2,two\n")
    done = queuesvc(cli_env, "import", str(csv), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout)
    assert final["status"] == "SUCCESS"
    assert final["result"]["inserted"] == 2, final


def test_a_cancelled_task_exits_1(cli_env: dict[str, str], client: httpx.Client) -> None:
    task_id = submit_process(client, iterations=10_000)
    watch = subprocess.Popen(
        [*CLI, "watch", task_id, "--json"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: client.get(f"/api/async/status/{task_id}").json()["status"] == "PROGRESS",
            60,
            message="task running",
        )
        cancelled = queuesvc(cli_env, "cancel", task_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "REVOKED" in cancelled.stdout
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 1, err
    assert json.loads(out)["status"] == "REVOKED"
    result = queuesvc(cli_env, "result", task_id)
    assert result.returncode == 1, result.stderr
    assert "REVOKED" in result.stdout


def test_a_wrong_key_exits_4_and_a_missing_scope_too(
    cli_env: dict[str, str], api_keys: dict[str, dict[str, Any]]
) -> None:
    wrong = {**cli_env, "QUEUESVC_API_KEY": "qsk_0123456789abcdef_" + "x" * 43}
    done = queuesvc(wrong, "status", str(uuid.uuid4()))
    assert done.returncode == 4
    assert "401" in one_error_line(done)
    reader = {**cli_env, "QUEUESVC_API_KEY": api_keys["reader"]["key"]}
    done = queuesvc(reader, "submit", "--data", "x", "--iterations", "1")
    assert done.returncode == 4
    assert "403" in one_error_line(done)


def test_an_unreachable_server_exits_3(cli_env: dict[str, str]) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    for args in (("status", str(uuid.uuid4())), ("watch", str(uuid.uuid4()))):
        done = queuesvc(cli_env, "--url", nobody, *args)
        assert done.returncode == 3, done.stderr
        assert "cannot reach" in one_error_line(done)


def test_usage_errors_exit_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    for args in (
        (),
        ("submit", "--data", "x"),
        ("import", str(tmp_path / "missing.csv")),
        ("status", str(uuid.uuid4())),  # the API's 404
        ("submit", "--data", "x", "--iterations", "0"),  # the API's 422
    ):
        done = queuesvc(cli_env, *args)
        assert done.returncode == 2, (args, done.stderr)
        one_error_line(done)


def test_the_progress_bar_advances_on_a_terminal(
    cli_env: dict[str, str], client: httpx.Client
) -> None:
    """On a pseudo-terminal, rich draws the bar as the events arrive: the captured
    screen output holds several different percentages, ending at 100%."""
    primary, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**cli_env, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(
        [*CLI, "submit", "--data", "bar", "--iterations", "3000", "--wait"],
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    captured = bytearray()
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            captured += chunk
        code = child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(primary)
    screen = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", bytes(captured)).decode(errors="replace")
    assert code == 0, screen[-3000:]
    percents = {int(p) for p in re.findall(r"\b(\d{1,3})%", screen)}
    assert len(percents - {0, 100}) >= 1, screen[-3000:]
    assert 100 in percents, screen[-3000:]
    assert len(percents) >= 2, percents
    assert "SUCCESS" in screen


def test_watch_outlives_a_restart_of_the_api(
    app_env: dict[str, str],
    workdir: Path,
    cli_env: dict[str, str],
    redis_client: redis.Redis,
) -> None:
    """The stream ends when its API stops; `watch` polls the status route until an API
    answers again, resumes the stream from its last event id, and ends with the result."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def start_api(name: str) -> Process:
        process = gunicorn_api(app_env, workdir / f"api-{name}.log", port)
        process.start()
        wait_http_ok(base + "/health/live")
        return process

    task_id = str(uuid.uuid4())
    worker = SyncStatusStore(redis_client, 600, 600)
    worker.update(task_id, name="test.restart", status="STARTED", current=0, total=4)
    redis_client.hset(task_key(task_id), "owner", "tester")  # the `user` key's owner
    first = start_api("first")
    watch = subprocess.Popen(
        [*CLI, "--url", base, "watch", task_id, "--json"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second: Process | None = None
    try:
        wait_until(lambda: streams_open(redis_client, task_id), 30, message="watch streaming")
        first.stop()  # ends the stream: the CLI polls, and is refused for a while
        worker.update(task_id, status="PROGRESS", current=2, total=4)
        second = start_api("second")
        wait_until(lambda: streams_open(redis_client, task_id), 30, message="stream resumed")
        worker.settle(task_id, TaskState.SUCCESS, result={"restarted": True}, current=4)
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        first.stop()
        if second is not None:
            second.stop()
    assert watch.returncode == 0, err
    final = json.loads(out)
    assert (final["status"], final["result"]) == ("SUCCESS", {"restarted": True})


def streams_open(redis_client: redis.Redis, task_id: str) -> bool:
    """Whether an API process follows the task (its channel has a subscriber)."""
    counts = dict(redis_client.pubsub_numsub(events_channel(task_id)))
    return bool(counts.get(events_channel(task_id)))
