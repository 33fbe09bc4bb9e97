"""Fixtures: real RabbitMQ and Redis (`python3 -m scripts.lab services`), a MongoDB server,
a real Celery worker and the API under gunicorn, all on loopback."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pymongo import MongoClient

from tests.integration.services import (
    MongoEmulator,
    Process,
    RedisServer,
    bearer,
    celery_worker,
    create_key,
    free_port,
    gunicorn_api,
    load_dev_env,
    purge_queues,
    wait_http_ok,
    wait_until,
)

MONGO_SERVER: dict[str, str] = {}
# Lines a test leaves for the end of the run (e.g. Schemathesis's summary).
SUMMARY_LINES: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _missing(reason: str) -> None:
    # In CI a missing service is a failure, never a silent skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dev_env() -> dict[str, str]:
    values = load_dev_env()
    for key in ("APP_TEST_BROKER_URL", "APP_TEST_REDIS_URL"):
        if not values.get(key):
            _missing(f"{key} is not set: run `python3 -m scripts.lab services` first")
    return values


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def mongo(dev_env: dict[str, str], workdir: Path) -> Iterator[MongoEmulator | None]:
    """A real mongod when APP_TEST_MONGODB_URI names one, else the mongoeco emulator."""
    if dev_env.get("APP_TEST_MONGODB_URI"):
        MONGO_SERVER["name"] = "the MongoDB server named by APP_TEST_MONGODB_URI"
        MONGO_SERVER["uri"] = dev_env["APP_TEST_MONGODB_URI"]
        yield None
        return
    python = dev_env.get("APP_TEST_MONGOECO_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip(
            "no MongoDB server: set APP_TEST_MONGODB_URI, or install Python 3.13 so "
            "`python3 -m scripts.lab services` can set up the mongoeco emulator"
        )
    emulator = MongoEmulator(python, workdir)
    emulator.start()
    MONGO_SERVER["name"] = emulator.description
    MONGO_SERVER["uri"] = emulator.uri
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def app_env(dev_env: dict[str, str], mongo: MongoEmulator | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(
        {
            "APP_ENV": "test",
            "APP_BROKER_URL": dev_env["APP_TEST_BROKER_URL"],
            "APP_REDIS_URL": dev_env["APP_TEST_REDIS_URL"],
            "APP_MONGODB_URI": MONGO_SERVER["uri"],
            "APP_MONGODB_DATABASE": f"queuesvc_test_{uuid.uuid4().hex[:8]}",
            # Fast failure when a test stops MongoDB on purpose.
            "APP_MONGODB_TIMEOUT_MS": "1500",
            "APP_TASK_RETRY_BACKOFF_MAX": "2",
            # The API's own host may read /health and /metrics without a key
            # (as the app role sets it); 127.0.0.2 stands for everyone else.
            "APP_OPS_NETWORKS": "127.0.0.1",
            # Quotas out of the way of the load tests; test_quotas sets its own.
            "APP_QUOTA_SUBMIT_RATE": "100000",
            "APP_QUOTA_SUBMIT_BURST": "1000000",
            "APP_QUOTA_IN_FLIGHT_COST": "100000000",
            # test_events waits for a heartbeat on an idle stream.
            "APP_EVENTS_HEARTBEAT_SECONDS": "1",
        }
    )
    return env


USER_SCOPES = "tasks:submit,tasks:read,items:read,items:write"


@pytest.fixture(scope="session")
def api_keys(app_env: dict[str, str], mongo: MongoEmulator | None) -> dict[str, dict[str, Any]]:
    """Keys by role: `user` and `other` (two owners, every scope but admin),
    `reader` (the user's owner, tasks:read only) and `admin`."""
    return {
        "user": create_key(app_env, "tester", USER_SCOPES),
        "other": create_key(app_env, "other-tenant", USER_SCOPES),
        "reader": create_key(app_env, "tester", "tasks:read"),
        "admin": create_key(app_env, "ops", "admin"),
    }


@pytest.fixture(scope="session")
def broker_purged(app_env: dict[str, str]) -> None:
    """Start from empty queues: earlier runs may have left messages."""
    purge_queues(app_env)


@pytest.fixture(scope="session")
def redis_cleared(app_env: dict[str, str]) -> None:
    """Start from an empty test database: earlier runs and the benchmark leave task
    records (and claims, quotas) behind, and a test that scans them would pay for them."""
    client = redis.Redis.from_url(app_env["APP_REDIS_URL"])
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def worker(
    app_env: dict[str, str], workdir: Path, broker_purged: None, redis_cleared: None
) -> Iterator[Process]:
    process = celery_worker(app_env, workdir / "worker.log")
    process.start()
    wait_until(
        lambda: "ready" in process.tail(200) or not process.running(),
        60,
        message="celery worker ready",
    )
    assert process.running(), process.tail()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api(app_env: dict[str, str], workdir: Path, redis_cleared: None) -> Iterator[str]:
    port = free_port()
    metrics_dir = workdir / "metrics"  # prometheus multiprocess mode, as under systemd
    metrics_dir.mkdir()
    env = {**app_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    process = gunicorn_api(env, workdir / "api.log", port)
    process.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(base + "/health/live")
    except TimeoutError:
        pytest.fail("API did not start:\n" + process.tail())
    yield base
    process.stop()


@pytest.fixture
def client(
    api: str, worker: Process, api_keys: dict[str, dict[str, Any]]
) -> Iterator[httpx.Client]:
    """A tenant's client: the `user` key."""
    with httpx.Client(base_url=api, timeout=15, headers=bearer(api_keys["user"])) as http:
        yield http


@pytest.fixture
def admin_client(
    api: str, worker: Process, api_keys: dict[str, dict[str, Any]]
) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, timeout=15, headers=bearer(api_keys["admin"])) as http:
        yield http


@pytest.fixture(scope="session")
def mongo_db(app_env: dict[str, str]) -> Iterator[Any]:
    """Direct access to the test database, to check what the service stored."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        app_env["APP_MONGODB_URI"], serverSelectionTimeoutMS=5000, tz_aware=True
    )
    yield client[app_env["APP_MONGODB_DATABASE"]]
    client.close()


@pytest.fixture(scope="session")
def redis_client(app_env: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(app_env["APP_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def redis_server(dev_env: dict[str, str]) -> Iterator[RedisServer]:
    """Stop and start the local Redis; always running again afterwards."""
    conf = dev_env.get("APP_TEST_REDIS_CONF")
    if not conf:
        _missing("APP_TEST_REDIS_CONF is not set: run `python3 -m scripts.lab services` first")
    server = RedisServer(dev_env["APP_TEST_REDIS_URL"], Path(str(conf)))
    yield server
    server.start()


@pytest.fixture
def rabbitmqctl(dev_env: dict[str, str]) -> Iterator[Any]:
    """Stop and start RabbitMQ's AMQP listener; always started again afterwards."""
    ctl = dev_env.get("APP_TEST_RABBITMQCTL", "rabbitmqctl")

    def run(action: str) -> None:
        subprocess.run([ctl, "-q", action], check=True, timeout=120, capture_output=True)

    yield run
    run("start_app")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY_LINES:
        terminalreporter.write_line(line)
    if MONGO_SERVER:
        terminalreporter.write_line(
            f"MongoDB server used by the integration tests: {MONGO_SERVER['name']}"
        )
