"""The command-line client's side of HTTP: requests, their errors as exit codes, and
following a task's event stream (with status polls when the stream is cut)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Any

import httpx

from app import sse

FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
# How long `watch` keeps trying once a server it reached stops answering.
RECONNECT_FOR_SECONDS = 30.0
RECONNECT_PAUSE_SECONDS = 1.0
# Longer than the server's heartbeat (APP_EVENTS_HEARTBEAT_SECONDS, 15 s).
STREAM_READ_TIMEOUT_SECONDS = 60.0


class Exit(IntEnum):
    """The documented exit codes (README: "Command-line client")."""

    OK = 0
    TASK_FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    AUTH = 4


class CliError(Exception):
    """One line for stderr and the exit code that goes with it."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.code = code


def verify_option(ca: str | None, insecure: bool) -> ssl.SSLContext | bool:
    if insecure:
        return False
    if ca is None:
        return True
    if not Path(ca).is_file():
        raise CliError(f"--ca {ca}: no such file", Exit.USAGE)
    try:
        return ssl.create_default_context(cafile=ca)
    except ssl.SSLError as exc:
        raise CliError(f"--ca {ca}: not a certificate file ({exc})", Exit.USAGE) from None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI's 422: a list of problems
        detail = "; ".join(str(item.get("msg", item)) for item in detail if isinstance(item, dict))
    return str(detail or response.reason_phrase or "no detail")


def check(response: httpx.Response) -> None:
    """Raise the CliError an error response stands for."""
    code = response.status_code
    if code < 400:
        return
    detail = _detail(response)
    if code in (401, 403):
        raise CliError(f"refused ({code}): {detail}", Exit.AUTH)
    if code >= 500:
        raise CliError(f"server error ({code}): {detail}", Exit.UNREACHABLE)
    raise CliError(f"{detail} ({code})", Exit.USAGE)


class Api:
    """The queuesvc API at `url`, with an API key."""

    def __init__(self, url: str, key: str, verify: ssl.SSLContext | bool, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            verify=verify,
            timeout=timeout,
        )
        # Whether the server answered once: a cut then is worth waiting out.
        self.reached = False

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.url}: {_reason(exc)}", Exit.UNREACHABLE) from None
        self.reached = True
        check(response)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise CliError(
                f"{self.url} answered {method} {path} with something other than JSON",
                Exit.UNREACHABLE,
            ) from None
        return body

    def follow(self, task_id: str, on_status: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Feed each state of the task to `on_status` until its final state, which is returned.

        The event stream first; when it is cut (or this server has none), one status
        poll per second until the stream comes back, resuming from its last event id.
        A server never reached is an error at once; one that stops answering, after
        RECONNECT_FOR_SECONDS.
        """
        last_id: str | None = None
        failing_since: float | None = None
        while True:
            try:
                final, last_id = self._stream(task_id, last_id, on_status)
                if final is not None:
                    return final
                self.reached = True
                failing_since = None
                continue  # ended without a final event: that server is stopping
            except _StreamCut:
                pass
            try:
                status = self.request("GET", f"/api/async/status/{task_id}")
            except CliError as exc:
                if exc.code != Exit.UNREACHABLE or not self.reached:
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > RECONNECT_FOR_SECONDS:
                    raise
            else:
                failing_since = None
                on_status(status)
                if status["status"] in FINAL_STATES:
                    return status
            time.sleep(RECONNECT_PAUSE_SECONDS)

    def _stream(
        self, task_id: str, last_id: str | None, on_status: Callable[[dict[str, Any]], None]
    ) -> tuple[dict[str, Any] | None, str | None]:
        headers = {"Accept": sse.MEDIA_TYPE}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        parser = sse.Parser()
        parser.last_id = last_id
        timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT_SECONDS)
        try:
            with self._http.stream(
                "GET", f"/api/async/events/{task_id}", headers=headers, timeout=timeout
            ) as response:
                self.reached = True
                if response.status_code >= 500 or response.status_code == 405:
                    raise _StreamCut(f"event stream answered {response.status_code}")
                if response.status_code >= 400:
                    response.read()
                    check(response)
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    status: dict[str, Any] = json.loads(event.data)
                    on_status(status)
                    if event.event == "final":
                        return status, parser.last_id
        except httpx.TransportError as exc:
            raise _StreamCut(_reason(exc)) from None
        except ValueError as exc:  # an event that is not JSON: a proxy's page, say
            raise _StreamCut(f"unreadable event: {exc}") from None
        return None, parser.last_id


class _StreamCut(Exception):
    """The stream failed in a way a status poll may get around."""


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0]
