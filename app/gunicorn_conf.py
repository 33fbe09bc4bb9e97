"""Gunicorn settings: `gunicorn -c python:app.gunicorn_conf 'app.main:create_app()'`.

Each value can be overridden with GUNICORN_CMD_ARGS or the command line.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from prometheus_client import multiprocess
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from app import events


class DrainingServer(Server):
    """uvicorn's server that, when stopping, first ends the open event streams.

    uvicorn waits for every open response before it stops (up to gunicorn's
    graceful_timeout), and a stream lasts as long as its task: ended at once,
    its clients reconnect to another worker with their Last-Event-ID.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        events.drain_all()
        await super().shutdown(sockets)


class Worker(UvicornWorker):  # type: ignore[misc]  # uvicorn_worker ships no types
    """uvicorn with a cap on open connections per process (its `limit_concurrency`).

    The app sheds load itself at APP_MAX_IN_FLIGHT requests with a JSON 503
    (app.overload); this cap is the backstop against a flood of connections,
    above the in-flight limit plus the idle keep-alive connections nginx
    holds. Past it uvicorn answers its own plain 503 and closes.
    """

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "limit_concurrency": int(os.environ.get("APP_MAX_CONNECTIONS", "4096")),
    }

    async def _serve(self) -> None:
        # UvicornWorker._serve with our server class.
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


bind = os.environ.get("APP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("APP_WORKERS", "2"))
worker_class = "app.gunicorn_conf.Worker"
# Connections the kernel queues for the workers to accept (the listen
# backlog, capped by net.core.somaxconn: the app role raises it). Workers
# accept fast and shed what they cannot run, so the queue absorbs bursts
# instead of dropping SYNs that nginx would see as connect timeouts.
backlog = int(os.environ.get("APP_BACKLOG", "16384"))
# Requests in flight finish on stop/HUP within this time.
graceful_timeout = 30
timeout = 60
# Idle keep-alive (seconds): longer than the load balancers' own upstream
# keep-alive (nginx_upstream_keepalive_timeout, 60 s), so nginx always closes
# an idle connection first and never reuses one the app is closing.
keepalive = 75
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
