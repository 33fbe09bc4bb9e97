"""Real services for the integration tests: processes started and stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
DEV_ENV_FILE = Path(os.environ.get("QUEUESVC_DEV_ENV", "/var/lib/queuesvc-dev/test.env"))


def load_dev_env() -> dict[str, str]:
    """Connection settings that `python3 -m scripts.lab services` writes; the environment wins."""
    values: dict[str, str] = {}
    if DEV_ENV_FILE.exists():
        for line in DEV_ENV_FILE.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    values.update({k: v for k, v in os.environ.items() if k.startswith("APP_TEST_")})
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, message: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout}s")
        time.sleep(interval)


@dataclass
class Process:
    """A child process of the test run, in its own session, ended by PID."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO,
        )

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class MongoEmulator:
    """The mongoeco wire-protocol server: a MongoDB stand-in (no mongod installs here)."""

    description = "mongoeco 4.11.0 wire-protocol emulator (a stand-in, not MongoDB)"

    def __init__(self, python: str, workdir: Path) -> None:
        self.port = free_port()
        self.password = os.urandom(12).hex()
        users = workdir / "mongo-users.json"
        users.write_text(json.dumps([{"username": "queuesvc", "password": self.password}]))
        users.chmod(0o600)
        self.process = Process(
            "mongoeco",
            [
                python,
                str(REPO / "roles/mongodb/files/mongoeco_server.py"),
                "--port",
                str(self.port),
                "--engine",
                "sqlite",
                "--path",
                str(workdir / "mongo.sqlite3"),
                "--users-file",
                str(users),
            ],
            dict(os.environ),
            workdir / "mongoeco.log",
        )
        self.uri = (
            f"mongodb://queuesvc:{self.password}@127.0.0.1:{self.port}/"
            "?authSource=admin&authMechanism=SCRAM-SHA-256&directConnection=true"
        )

    def start(self) -> None:
        self.process.start()
        wait_until(self._accepting, 30, message="mongoeco listening")

    def stop(self) -> None:
        self.process.stop()

    def _accepting(self) -> bool:
        if not self.process.running():
            raise RuntimeError("mongoeco exited:\n" + self.process.tail())
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


def celery_worker(
    env: dict[str, str],
    log: Path,
    queues: str = "default,imports",
    *,
    concurrency: int = 2,
    name: str = "test",
    log_level: str = "INFO",
    extra: tuple[str, ...] = (),
) -> Process:
    return Process(
        "worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "app.celery_app",
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--without-mingle",
            "--without-gossip",
            *extra,
            "-l",
            log_level,
        ],
        env,
        log,
    )


def gunicorn_api(env: dict[str, str], log: Path, port: int) -> Process:
    env = {**env, "APP_BIND": f"127.0.0.1:{port}", "APP_WORKERS": "2"}
    return Process(
        "api",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:app.gunicorn_conf",
            "app.main:create_app()",
        ],
        env,
        log,
    )


def create_key(env: dict[str, str], owner: str, scopes: str, *extra: str) -> dict[str, Any]:
    """A new API key, made by the command operators use (`python -m app keys create`)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "keys",
            "create",
            "--json",
            "--owner",
            owner,
            "--scopes",
            scopes,
            *extra,
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    key: dict[str, Any] = json.loads(done.stdout)
    return key


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


# Run with the service's environment: `celery_app` is built from it on first use.
_DELETE_QUEUES = """
from kombu import Connection
from app.celery_app import DEAD_QUEUE, QUEUE_NAMES, celery_app
with Connection(celery_app.conf.broker_url, connect_timeout=10) as connection:
    channel = connection.channel()
    for name in (*QUEUE_NAMES, DEAD_QUEUE):
        channel.queue_delete(name)
"""


def purge_queues(env: dict[str, str]) -> None:
    """Start from empty queues: delete the service's queues (messages an earlier run
    left, or queues of an older layout); the API and the workers declare them anew."""
    subprocess.run(
        [sys.executable, "-c", _DELETE_QUEUES],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


@dataclass
class RedisServer:
    """The local Redis of `python3 -m scripts.lab services`, stopped and started by tests."""

    url: str
    conf: Path

    def _ping(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        client = redis.Redis.from_url(self.url)
        with contextlib.suppress(redis.ConnectionError):  # the reply never comes
            client.shutdown()
        wait_until(lambda: not self._ping(), 10, 0.1, "Redis stopped")

    def start(self) -> None:
        if not self._ping():
            subprocess.run(["redis-server", str(self.conf)], check=True, timeout=30)
        wait_until(self._ping, 30, 0.1, "Redis answering")


# Publishes messages given as JSON on stdin, with the service's environment:
# {"task": name, "id": ..., "args": [...], "headers": {...}} builds a Celery
# message (protocol 2); {"raw": text} sends the text as is. Both go to
# "exchange" with "routing_key".
_PUBLISH = """
import json, sys
from kombu.utils.json import dumps
from app.celery_app import celery_app
with celery_app.producer_or_acquire() as producer:
    for spec in json.load(sys.stdin):
        if "raw" in spec:
            headers, body = spec.get("headers", {}), spec["raw"]
        else:
            message = celery_app.amqp.as_task_v2(spec["id"], spec["task"], args=spec["args"])
            headers = {**message.headers, **spec.get("headers", {})}
            body = dumps(message.body)
        producer.publish(
            body.encode(), exchange=spec["exchange"], routing_key=spec["routing_key"],
            headers=headers, content_type="application/json", content_encoding="utf-8",
            delivery_mode=2, retry=True,
        )
"""


def publish(env: dict[str, str], messages: list[dict[str, Any]]) -> None:
    """Publish task messages or raw ones to RabbitMQ, bypassing the API."""
    done = subprocess.run(
        [sys.executable, "-c", _PUBLISH],
        env=env,
        input=json.dumps(messages),
        text=True,
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, f"publishing failed: {done.stderr[-2000:]}"


def wait_http_ok(url: str, timeout: float = 30) -> None:
    def ok() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ok, timeout, 0.2, f"{url} answering")
