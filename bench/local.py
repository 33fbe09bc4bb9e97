"""The benchmarks' local setup, on loopback: the service's environment against
the dev services of `python3 -m scripts.lab services` (RabbitMQ, Redis) and a
MongoDB server (APP_TEST_MONGODB_URI, else the mongoeco emulator), and
gunicorn serving an app with the service's settings (2 workers)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.services import (
    MongoEmulator,
    Process,
    free_port,
    load_dev_env,
    wait_http_ok,
)


@dataclass(frozen=True)
class Local:
    env: dict[str, str]  # the service's environment
    broker: str
    mongo_uri: str
    mongo_name: str
    mongo_pid: int | None  # the emulator's; None: the server of APP_TEST_MONGODB_URI
    workdir: Path


@contextmanager
def services(database: str, settings: Mapping[str, str]) -> Iterator[Local]:
    """The environment (the dev services, `database` in MongoDB, `settings` on
    top) with a MongoDB server up; the emulator is stopped at the end."""
    dev = load_dev_env()
    if not dev.get("APP_TEST_BROKER_URL") or not dev.get("APP_TEST_REDIS_URL"):
        raise SystemExit("run `python3 -m scripts.lab services` first")
    workdir = Path(tempfile.mkdtemp(prefix="queuesvc-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(
        {
            "APP_ENV": "test",
            "APP_BROKER_URL": dev["APP_TEST_BROKER_URL"],
            "APP_REDIS_URL": dev["APP_TEST_REDIS_URL"],
            "APP_MONGODB_DATABASE": database,
            **settings,
        }
    )
    broker = env["APP_BROKER_URL"]
    if dev.get("APP_TEST_MONGODB_URI"):
        env["APP_MONGODB_URI"] = uri = dev["APP_TEST_MONGODB_URI"]
        yield Local(env, broker, uri, "APP_TEST_MONGODB_URI", None, workdir)
        return
    mongo = MongoEmulator(dev["APP_TEST_MONGOECO_PYTHON"], workdir)
    mongo.start()
    try:
        assert mongo.process.proc is not None
        env["APP_MONGODB_URI"] = mongo.uri
        yield Local(env, broker, mongo.uri, mongo.description, mongo.process.proc.pid, workdir)
    finally:
        mongo.stop()


def gunicorn(app_spec: str, env: dict[str, str], log: Path, port: int) -> Process:
    env = {**env, "APP_BIND": f"127.0.0.1:{port}", "APP_WORKERS": "2"}
    return Process(
        "gunicorn",
        [sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf", app_spec],
        env,
        log,
    )


@dataclass(frozen=True)
class Server:
    base: str
    pid: int  # gunicorn's master


@contextmanager
def serving(app_spec: str, env: dict[str, str], workdir: Path, probe: str) -> Iterator[Server]:
    port = free_port()
    process = gunicorn(app_spec, env, workdir / f"gunicorn-{port}.log", port)
    process.start()
    assert process.proc is not None
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(base + probe)
        yield Server(base, process.proc.pid)
    finally:
        process.stop()
