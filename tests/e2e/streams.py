"""Task event streams followed through the load balancer, as a client would,
reconnecting with Last-Event-ID whenever a stream ends before its task does."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from app import sse
from tests.e2e.conftest import _verify, bearer

# Counted apart from the outcomes: a kept-alive connection nginx closed before
# answering. Each drain reloads nginx, and its old workers close their idle
# client connections; a request sent on one at that instant gets no response
# (HTTP/1.1's keep-alive race). nginx never read that request, so it is sent
# once more on a new connection, as browsers do; the retry's result is counted.
CLOSED_BEFORE_ANSWER = "closed before answering, sent again"

# Steps of work per followed task: several seconds on a lab worker, so that a
# deploy's drain finds streams open on the app server it stops.
STREAM_TASK_ITERATIONS = 3000
# Longer than the API's heartbeat (15 s): a read timeout is a broken stream.
READ_TIMEOUT_SECONDS = 60.0
RETRY_PAUSE_SECONDS = 0.5


def unanswered(exc: httpx.TransportError) -> bool:
    """The keep-alive race above: nginx never read the request."""
    return isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)


@dataclass
class Followed:
    """One task's stream as the client saw it, across reconnections."""

    task_id: str
    ids: list[int] = field(default_factory=list)
    # The app server (lb1's X-Upstream) of each stream opened, in order.
    upstreams: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None
    # Streams that ended cleanly before the final event (a server stopping).
    resumes: int = 0


@dataclass
class Tally:
    followed: list[Followed] = field(default_factory=list)
    # What went wrong (a refused open, a stream cut, ids out of order), and
    # the requests sent again (CLOSED_BEFORE_ANSWER), which is not wrong.
    problems: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, what: str) -> None:
        with self._lock:
            self.problems[what] += 1

    def unsent(self, what: str, exc: httpx.TransportError) -> None:
        """A request that got no answer: the keep-alive race (the caller sends it
        again at once), else a failure of `what`, after which it waits a moment."""
        if unanswered(exc):
            self.problem(CLOSED_BEFORE_ANSWER)
            return
        self.problem(f"{what}: {type(exc).__name__}: {exc}")
        time.sleep(RETRY_PAUSE_SECONDS)


def follow(http: httpx.Client, task_id: str, tally: Tally, deadline: float) -> Followed:
    """Read `task_id`'s stream to its final event, resuming from the last id."""
    seen = Followed(task_id)
    tally.followed.append(seen)
    parser = sse.Parser()
    while seen.final is None and time.monotonic() < deadline:
        headers = {"Accept": sse.MEDIA_TYPE}
        if parser.last_id is not None:
            headers["Last-Event-ID"] = parser.last_id
        try:
            with http.stream("GET", f"/api/async/events/{task_id}", headers=headers) as response:
                if response.status_code != 200:
                    tally.problem(f"stream opened with {response.status_code}")
                    time.sleep(RETRY_PAUSE_SECONDS)
                    continue
                seen.upstreams.append(response.headers.get("x-upstream", "?"))
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    if event.id is not None:
                        if seen.ids and int(event.id) <= seen.ids[-1]:
                            tally.problem("an event id not above the last")
                        seen.ids.append(int(event.id))
                    if event.event == "final":
                        seen.final = json.loads(event.data)
                        break
            if seen.final is None:
                seen.resumes += 1
        except httpx.TransportError as exc:
            tally.unsent("stream cut", exc)
    if seen.final is None:
        tally.problem("no final event in time")
    return seen


@contextmanager
def followed_streams(
    lab: dict[str, str], clients: int = 6, seconds: float = 600
) -> Iterator[Tally]:
    """`clients` threads, each submitting a task and following its stream
    through lb1 to the end, one after another, until the block ends (new
    tasks for at most `seconds`). Yields what they saw."""
    stop = threading.Event()
    tally = Tally()

    def run() -> None:
        timeout = httpx.Timeout(10, read=READ_TIMEOUT_SECONDS)
        with httpx.Client(
            base_url=lab["url"], verify=_verify(lab), timeout=timeout, headers=bearer(lab["key"])
        ) as http:
            end = time.monotonic() + seconds
            while not stop.is_set() and time.monotonic() < end:
                body = {"data": "followed", "iterations": STREAM_TASK_ITERATIONS}
                try:
                    submitted = http.post("/api/async/process", json=body)
                except httpx.TransportError as exc:
                    tally.unsent("submit", exc)
                    continue
                if submitted.status_code != 202:
                    tally.problem(f"submit answered {submitted.status_code}")
                    time.sleep(RETRY_PAUSE_SECONDS)
                    continue
                follow(http, submitted.json()["task_id"], tally, end + 120)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield tally
    finally:
        stop.set()
        for thread in threads:
            thread.join()
