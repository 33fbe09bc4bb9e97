"""Load shedding: a process at its in-flight limit answers 503 at once.

A request over the limit is not queued behind the others, where it would
wait until nginx or the client gave up: it gets a JSON 503 with
`Retry-After` straight away, which nginx passes on without counting the app
server as failed, and it is counted in /metrics. The check runs before any
other middleware, so a refusal costs almost nothing.
"""

from __future__ import annotations

import json

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

SHED = Counter(
    "queuesvc_http_shed_total", "Requests refused with 503 at the in-flight limit", ["method"]
)


class InFlightLimit:
    """Lets at most `limit` HTTP requests of this process run at once."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        retry_after_seconds: int,
        exempt_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.limit = limit
        # Long-lived requests (event streams) that have a limit of their own.
        self.exempt_prefixes = exempt_prefixes
        self.in_flight = 0
        self._body = json.dumps({"detail": "the server is busy; try again shortly"}).encode()
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
            (b"retry-after", str(retry_after_seconds).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            SHED.labels(scope["method"]).inc()
            await send({"type": "http.response.start", "status": 503, "headers": self._headers})
            await send({"type": "http.response.body", "body": self._body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
