"""Gunicorn settings: `gunicorn -c python:app.gunicorn_conf 'app.main:create_app()'`.

Each value can be overridden with GUNICORN_CMD_ARGS or the command line.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess

bind = os.environ.get("APP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("APP_WORKERS", "2"))
worker_class = "uvicorn_worker.UvicornWorker"
# Requests in flight finish on stop/HUP within this time.
graceful_timeout = 30
timeout = 60
keepalive = 5
# No max_requests recycling: under balanced load every worker of every app
# server reaches the limit together, and a 2 s reboot of all of them at once
# made nginx mark the whole upstream down (measured through the lab's lb1).
# gunicornc's control socket where the unit provides a place, off elsewhere
# (its default, $HOME/.gunicorn, is read-only under ProtectSystem=strict).
control_socket = os.environ.get("APP_CONTROL_SOCKET", "")
control_socket_disable = not control_socket
accesslog = "-" if os.environ.get("APP_ACCESS_LOG") == "1" else None
errorlog = "-"
proc_name = "queuesvc-api"


def child_exit(server: Any, worker: Any) -> None:
    # Drop a dead worker's live gauges from the shared metrics directory.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
