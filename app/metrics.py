"""Prometheus metrics: requests by route and status, latency, tasks submitted.

Under gunicorn every worker process counts for itself; with
PROMETHEUS_MULTIPROC_DIR set (the systemd unit does), /metrics aggregates
all of them (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "queuesvc_http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
LATENCY = Histogram(
    "queuesvc_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
TASKS_SUBMITTED = Counter(
    "queuesvc_tasks_submitted_total", "Tasks published to the broker", ["task"]
)

SUBMIT_BATCH_SIZE = Histogram(
    "queuesvc_submit_batch_size",
    "Submits committed together (one Redis round trip, confirms awaited together)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
IDEMPOTENT_REPLAYS = Counter(
    "queuesvc_idempotent_replays_total",
    "Submits answered with the task an earlier request with the same Idempotency-Key created",
)

PUBLISH_BUSY = Counter(
    "queuesvc_publish_busy_total", "Submits refused because RabbitMQ confirmed too slowly (load)"
)
QUEUE_FULL = Counter(
    "queuesvc_queue_full_total",
    "Submits refused because their task queue was at its length limit (RabbitMQ nacked them)",
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times requests, labelled by route template (bounded cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The labelled children, looked up once per label set: labels() takes a
        # lock and checks its arguments on every call.
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._observe(scope["method"], template, status, time.perf_counter() - started)

    def _observe(self, method: str, template: str, status: int, seconds: float) -> None:
        count = self._counts.get((method, template, status))
        if count is None:
            count = self._counts[(method, template, status)] = REQUESTS.labels(
                method, template, str(status)
            )
        latency = self._latencies.get((method, template))
        if latency is None:
            latency = self._latencies[(method, template)] = LATENCY.labels(method, template)
        count.inc()
        latency.observe(seconds)
