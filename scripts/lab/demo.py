"""The product on this one machine, and the tutorial's requests against it.

- lab: the seven-host lab (prepare the host with the network guard first,
  the box, `vagrant up --provider=lxc`), then the requests through lb1.
- local: the service alone on loopback: RabbitMQ, Redis and the MongoDB
  emulator, one Celery worker for both queues and the API under gunicorn at
  http://127.0.0.1:8000; `local-stop` stops what it started, by PID.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from . import config, services
from .sh import die, log, project_venv

LOCAL_API = "http://127.0.0.1:8000"
LOCAL_STATE = Path(os.environ.get("QUEUESVC_DEMO_STATE", str(config.DEV_STATE / "demo")))
LOCAL_KEY = LOCAL_STATE / "api-key"
FINAL = ("SUCCESS", "FAILURE", "REVOKED")


def _request(
    base: str, method: str, path: str, key: str, body: Any = None, insecure: bool = False
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(  # noqa: S310 - the demo's own http(s) URL
        base + path, data=data, method=method, headers=headers
    )
    context = ssl._create_unverified_context() if insecure else None  # noqa: S323
    try:
        with urllib.request.urlopen(request, timeout=15, context=context) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read() or b"{}")


def smoke(base: str, key: str, admin_key: str = "", insecure: bool = False) -> None:
    """The tutorial's requests, with an API key: health (with `admin_key`, as
    /health asks of a caller outside the operators' networks; none from
    them), create an item, a task run to SUCCESS; then a task submitted and
    followed to its end by the `queuesvc` client (a live bar on a terminal)."""
    flag = " -k" if insecure else ""
    auth = ' -H "Authorization: Bearer $KEY"'
    admin_auth = ' -H "Authorization: Bearer $ADMIN_KEY"' if admin_key else ""
    print(f"\n== curl{flag}{admin_auth} {base}/health")
    health = _request(base, "GET", "/health", admin_key, insecure=insecure)
    print(json.dumps(health))
    if health.get("status") != "healthy":
        die("smoke check failed: not healthy")
    print(f'\n== curl{flag}{auth} -X POST {base}/api/items -d \'{{"name": "Test Item"}}\'')
    print(json.dumps(_request(base, "POST", "/api/items", key, {"name": "Test Item"}, insecure)))
    body = {"data": "heavy task", "iterations": 100}
    print(f"\n== curl{flag}{auth} -X POST {base}/api/async/process -d '{json.dumps(body)}'")
    submitted = _request(base, "POST", "/api/async/process", key, body, insecure)
    print(json.dumps(submitted))
    task_id = submitted.get("task_id") or die("smoke check failed: no task_id")
    print(f"\n== curl{flag}{auth} {base}/api/async/status/{task_id} (until it finishes)")
    status: dict[str, Any] = {}
    for _ in range(150):
        status = _request(base, "GET", f"/api/async/status/{task_id}", key, insecure=insecure)
        if status.get("status") in FINAL:
            break
        time.sleep(0.2)
    print(json.dumps(status)[:300])
    if status.get("status") != "SUCCESS":
        die("smoke check failed: the task did not succeed")
    # Without a key: refused.
    refused = _request(base, "GET", "/api/items", "", insecure=insecure)
    print(f"\n== curl{flag} {base}/api/items (no key)\n{json.dumps(refused)}")
    # The same through the command-line client, following the task's event stream.
    cli = ["queuesvc", "--url", base, *(["--insecure"] if insecure else [])]
    cli += ["submit", "--data", "heavy task", "--iterations", "3000", "--wait"]
    print(f"\n== QUEUESVC_API_KEY=$KEY {' '.join(cli)}", flush=True)
    waited = subprocess.run(
        [str(config.VENV / "bin" / cli[0]), *cli[1:]],
        env={**os.environ, "QUEUESVC_API_KEY": key},
        check=False,
        timeout=300,
    )
    if waited.returncode != 0:
        die(f"smoke check failed: queuesvc submit --wait exited {waited.returncode}")


def lab() -> None:
    from . import lab as lab_steps

    project_venv()  # the controller builds the app's wheelhouse with it
    lab_steps.up()
    key, admin_key = config.lab_api_key("demo"), config.lab_api_key("admin")
    print("\n== the lab's API keys: KEY=$(python3 -m scripts.lab api-key demo)")
    print("   ADMIN_KEY=$(python3 -m scripts.lab api-key admin)")
    smoke(config.LB_URL, key, admin_key, insecure=True)  # lb1's certificate is self-signed
    print(
        f"\n== the lab is up: {config.LB_URL} (API docs: README, Access); "
        "stop it with: bash scripts/demo.sh stop"
    )


def _running(name: str) -> int | None:
    pidfile = LOCAL_STATE / f"{name}.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _start(name: str, cmd: list[str], env: dict[str, str]) -> None:
    if _running(name):
        print(f"{name} already running")
        return
    with (LOCAL_STATE / f"{name}.log").open("a") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=config.ROOT,
            start_new_session=True,
        )
    (LOCAL_STATE / f"{name}.pid").write_text(str(process.pid))


def local_stop() -> None:
    for name in ("api", "worker", "mongo"):
        pid = _running(name)
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _running(name):
                    break
                time.sleep(0.2)
            print(f"stopped {name}")
        (LOCAL_STATE / f"{name}.pid").unlink(missing_ok=True)


def _wait(check: Any, tries: int = 150) -> bool:
    for _ in range(tries):
        if check():
            return True
        time.sleep(0.2)
    return False


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _live() -> bool:
    try:
        with urllib.request.urlopen(LOCAL_API + "/health/live", timeout=2):  # noqa: S310
            return True
    except OSError:
        return False


def local() -> None:
    settings = services.start()
    venv = project_venv()
    LOCAL_STATE.mkdir(parents=True, exist_ok=True)
    LOCAL_STATE.chmod(0o700)
    mongo_python = settings.get("APP_TEST_MONGOECO_PYTHON") or die(
        "the local demo needs Python 3.13 for the MongoDB emulator"
    )
    password_file = LOCAL_STATE / "mongo.password"
    if not password_file.exists():
        services._private(password_file, secrets.token_urlsafe(18))
    password = password_file.read_text().strip()
    users = LOCAL_STATE / "mongo-users.json"
    services._private(users, json.dumps([{"username": "queuesvc", "password": password}]) + "\n")
    metrics = LOCAL_STATE / "metrics"
    env = {
        **os.environ,
        "APP_ENV": "production",
        "APP_MONGODB_URI": f"mongodb://queuesvc:{password}@127.0.0.1:27017/queuesvc?authSource="
        "admin&authMechanism=SCRAM-SHA-256&directConnection=true",
        "APP_REDIS_URL": settings["APP_TEST_REDIS_URL"],
        "APP_BROKER_URL": settings["APP_TEST_BROKER_URL"],
        "APP_BIND": "127.0.0.1:8000",
        "APP_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        # This machine is the operator: /health, /metrics and /docs without a key.
        "APP_OPS_NETWORKS": "127.0.0.1",
    }
    print("\n== MongoDB emulator (mongoeco: a stand-in, not MongoDB), worker, API")
    _start(
        "mongo",
        [
            mongo_python,
            str(config.MONGOECO_SERVER),
            "--port",
            "27017",
            "--engine",
            "sqlite",
            "--path",
            str(LOCAL_STATE / "mongo.sqlite3"),
            "--users-file",
            str(users),
        ],
        env,
    )
    _wait(lambda: _port_open(27017), 100)
    _start(
        "worker",
        [
            str(venv / "bin/celery"),
            "-A",
            "app.celery_app",
            "worker",
            "-Q",
            "default,imports",
            "-c",
            "2",
            "-l",
            "INFO",
        ],
        env,
    )
    if not _running("api"):
        subprocess.run(["rm", "-rf", str(metrics)], check=False)
        metrics.mkdir()
    _start(
        "api",
        [str(venv / "bin/gunicorn"), "-c", "python:app.gunicorn_conf", "app.main:create_app()"],
        env,
    )
    if not _wait(_live):
        tail = (LOCAL_STATE / "api.log").read_text().splitlines()[-20:]
        print("\n".join(tail))
        die(f"the API did not start; its log: {LOCAL_STATE / 'api.log'}")
    key = _local_key(venv, env)
    print(f"\n== the demo's API key (tenant demo): KEY=$(cat {LOCAL_KEY})")
    smoke(LOCAL_API, key)  # /health from loopback, an operators' network here
    log(
        f"up: API {LOCAL_API} (docs at {LOCAL_API}/docs); logs in {LOCAL_STATE}; "
        "stop with: bash scripts/demo.sh local-stop"
    )


def _local_key(venv: Path, env: dict[str, str]) -> str:
    """The local demo's key: made once with the `keys` command and kept in
    LOCAL_KEY (0600); seeded again on later runs, in case the data went."""
    keys = [str(venv / "bin/python"), "-m", "app", "keys"]
    tenant = ["--owner", "demo", "--scopes", "tasks:submit,tasks:read,items:read,items:write"]
    if LOCAL_KEY.exists():
        key = LOCAL_KEY.read_text().strip()
        subprocess.run(
            [*keys, "seed", "--name", "demo", *tenant],
            input=key + "\n",
            env=env,
            text=True,
            capture_output=True,
            check=True,
        )
        return key
    made = subprocess.run(
        [*keys, "create", "--name", "demo", *tenant, "--json"],
        env=env,
        text=True,
        capture_output=True,
        check=True,
    )
    key = str(json.loads(made.stdout)["key"])
    services._private(LOCAL_KEY, key + "\n")
    return key
