"""The real services the test suite and the local demo need, on loopback only:
RabbitMQ (a vhost and a user that is not guest), Redis (with a password) and
the mongoeco wire-protocol emulator's environment (a stand-in for MongoDB: no
mongod installs on this machine, see README). Idempotent.

The connection settings go to DEV_ENV (mode 0600), which the tests read.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import time
from pathlib import Path

from . import config
from .sh import apt_install, log, output, python_at_least, run, succeeds, virtualenv

RABBITMQ_ENV = """NODE_IP_ADDRESS=127.0.0.1
"""
RABBITMQ_CONF = """loopback_users.guest = true
management.tcp.ip = 127.0.0.1
# Above the longest task's hard time limit (see the app's settings).
consumer_timeout = 3600000
"""


def _private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def secret(name: str) -> str:
    """A random secret, made once and kept in the state directory."""
    path = config.DEV_STATE / name
    if not path.exists() or not path.read_text().strip():
        _private(
            path,
            base64.b64encode(secrets.token_bytes(24))
            .decode()
            .strip("=")
            .replace("/", "")
            .replace("+", ""),
        )
    return path.read_text().strip()


def start_rabbitmq() -> None:
    Path("/etc/rabbitmq/rabbitmq-env.conf").write_text(RABBITMQ_ENV)
    Path("/etc/rabbitmq/rabbitmq.conf").write_text(RABBITMQ_CONF)
    ctl = ["rabbitmqctl", "-q"]
    if not succeeds([*ctl, "status"]):
        log("starting rabbitmq-server")  # no systemd here: the package's init script
        run(["/etc/init.d/rabbitmq-server", "start"], quiet=True)
    if not succeeds([*ctl, "await_startup", "--timeout", "60"]):
        run([*ctl, "wait", "--timeout", "60", "/var/run/rabbitmq/pid"], quiet=True)
    succeeds([*ctl, "start_app"])
    password = secret("rabbitmq.password")
    if "queuesvc" not in output([*ctl, "list_vhosts"]).split():
        run([*ctl, "add_vhost", "queuesvc"], quiet=True)
    users = [line.split()[0] for line in output([*ctl, "list_users"]).splitlines() if line.strip()]
    verb = "change_password" if "queuesvc" in users else "add_user"
    run([*ctl, verb, "queuesvc", password], quiet=True)
    run([*ctl, "set_permissions", "-p", "queuesvc", "queuesvc", ".*", ".*", ".*"], quiet=True)
    if "guest" in users:
        run([*ctl, "delete_user", "guest"], quiet=True)


def redis_conf(password: str) -> str:
    state = config.DEV_STATE
    return f"""bind 127.0.0.1
port 6379
protected-mode yes
requirepass {password}
daemonize yes
pidfile {state}/redis.pid
dir {state}
appendonly yes
maxmemory-policy noeviction
logfile {state}/redis.log
"""


def start_redis() -> None:
    password = secret("redis.password")
    conf = config.DEV_STATE / "redis.conf"
    _private(conf, redis_conf(password))
    ping = ["redis-cli", "-a", password, "--no-auth-warning", "ping"]
    if succeeds(ping):
        return
    log("starting redis-server")
    # Debian's init script would start the packaged instance without a
    # password: run this configuration instead.
    subprocess.run(["/etc/init.d/redis-server", "stop"], capture_output=True, check=False)
    run(["redis-server", conf])
    for _ in range(50):
        if succeeds(ping):
            return
        time.sleep(0.1)


def mongoeco_python() -> str | None:
    """The emulator needs Python 3.13 or newer (pyenv's on this machine);
    None when there is none (the MongoDB tests then skip, or fail under CI)."""
    candidates = [
        "python3.13",
        "python3",
        *sorted(map(str, Path("/root/.pyenv/versions").glob("3.1[3-9]*/bin/python3"))),
    ]
    python = next((c for c in candidates if python_at_least(c, 13)), None)
    if python is None:
        log("no Python 3.13: the MongoDB tests skip unless APP_TEST_MONGODB_URI names a mongod")
        return None
    venv = virtualenv(config.MONGOECO_VENV, python, [config.MONGOECO_REQUIREMENT], [])
    return str(venv / "bin/python")


def start() -> dict[str, str]:
    """Install and start every service; returns (and writes to DEV_ENV) the settings."""
    config.DEV_STATE.mkdir(parents=True, exist_ok=True)
    config.DEV_STATE.chmod(0o700)
    os.environ.setdefault("DEBIAN_FRONTEND", "noninteractive")
    apt_install(["rabbitmq-server", "redis-server", "wrk"])
    start_rabbitmq()
    start_redis()
    settings = {
        "APP_TEST_BROKER_URL": f"amqp://queuesvc:{secret('rabbitmq.password')}@127.0.0.1:5672/queuesvc",
        "APP_TEST_REDIS_URL": f"redis://:{secret('redis.password')}@127.0.0.1:6379/0",
        "APP_TEST_REDIS_CONF": str(config.DEV_STATE / "redis.conf"),
        "APP_TEST_RABBITMQCTL": "rabbitmqctl",
    }
    python = mongoeco_python()
    if python:
        settings["APP_TEST_MONGOECO_PYTHON"] = python
    _private(config.DEV_ENV, "".join(f"{k}={v}\n" for k, v in settings.items()))
    log(f"services up; settings in {config.DEV_ENV}")
    return settings
