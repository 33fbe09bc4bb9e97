"""Slow clients against the load balancer: run INSIDE a lab container, not by pytest.

tests/faults/test_slow_clients.py passes this file's text to `python3 -c` in a
data-tier container (a lab host that lb1 does not exempt from its per-client
limits), with one argument: a JSON object of settings (see `Settings`).
Standard library only (the containers' python3).

Opens `count` TLS connections to host:port at `rate` a second at most, then
sends a request's header one byte every `interval` seconds, never finishing
it. While stdin stays open, every connection the server closes is replaced
(so `count` stay open); on "stop" or end of stdin it opens no more and waits
at most `wait` seconds for the server to close the rest, then closes them
itself. Whatever happens it ends within `deadline` seconds of its start.

It prints JSON lines on stdout: {"event": "start", "pid"}, {"event": "tick"}
every second (connections open, opening, opened, closed by the server,
failed), {"event": "full"} once `count` are open, {"event": "stopping"}, and
{"event": "end"} with the totals and the age of each connection the server
closed when it did (seconds from its connection attempt).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import ssl
import sys
import threading
import time
from collections import Counter
from typing import Any, TypedDict

# A request that is never finished: the request line, then one header whose
# value grows by a byte every interval.
HEADER_START = b"GET /health/live HTTP/1.1\r\nHost: %s\r\nX-Slow-Client: "


class Settings(TypedDict):
    host: str
    port: int
    tls: bool
    count: int  # connections kept open
    rate: float  # at most this many connection attempts a second
    interval: float  # seconds between two header bytes
    connect_timeout: float  # seconds for TCP connect and TLS handshake
    wait: float  # seconds after "stop" for the server to close the rest
    deadline: float  # seconds after the start at which everything ends


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class SlowClients:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.started = time.monotonic()
        self.stop = asyncio.Event()
        self.done = asyncio.Event()  # time is up: close every connection now
        self.tasks: set[asyncio.Task[None]] = set()
        self.opening = 0
        self.open = 0
        self.max_open = 0
        self.attempts = 0
        self.opened = 0
        self.failed: Counter[str] = Counter()
        self.closed_by_server = 0
        self.closes: Counter[str] = Counter()  # how the server closed: eof, reset, ...
        self.answers: Counter[str] = Counter()  # status line of any answer before the close
        self.ages: list[float] = []  # age of each connection the server closed
        self.handshakes: list[float] = []  # seconds from attempt to open
        self.last_close = 0.0  # seconds since the start
        self.stopped_at: float | None = None
        self.left_open = 0  # closed by us when time was up
        self.oldest_left = 0.0  # age of the oldest of those
        self.full_reported = False
        self.context: ssl.SSLContext | None = None
        if settings["tls"]:
            # The lab's certificate is self-signed: no verification.
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
            self.context.set_alpn_protocols(["http/1.1"])

    def now(self) -> float:
        return time.monotonic() - self.started

    async def client(self) -> None:
        s = self.s
        self.attempts += 1
        self.opening += 1
        began = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(s["host"], s["port"], ssl=self.context),
                s["connect_timeout"],
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.failed[type(exc).__name__] += 1
            return
        finally:
            self.opening -= 1
        self.opened += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self.handshakes.append(time.monotonic() - began)
        header = HEADER_START % s["host"].encode()
        sent = 0
        answer = b""
        how = ""
        try:
            while not self.done.is_set():
                byte = header[sent : sent + 1] if sent < len(header) else b"x"
                writer.write(byte)
                await writer.drain()
                sent += 1
                try:
                    data = await asyncio.wait_for(reader.read(4096), s["interval"])
                except TimeoutError:
                    continue
                if not data:
                    how = "eof"
                    break
                # An answer (e.g. 408) before the close: read on to the close.
                answer += data
                while data and len(answer) < 65536:
                    data = await asyncio.wait_for(reader.read(4096), s["interval"])
                    answer += data
                how = "eof after answer"
                break
        except TimeoutError:
            how = "answer without close"
        except ConnectionResetError:
            how = "reset"
        except (OSError, ssl.SSLError) as exc:
            how = type(exc).__name__
        age = time.monotonic() - began
        self.open -= 1
        if how:
            self.closed_by_server += 1
            self.closes[how] += 1
            self.ages.append(round(age, 3))
            self.last_close = self.now()
            if answer:
                self.answers[answer.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
        else:
            self.left_open += 1
            self.oldest_left = max(self.oldest_left, age)
        writer.transport.abort()

    def spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self.client())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def keep_open(self) -> None:
        """Start connections at `rate` at most while fewer than `count` are open or opening."""
        rate = self.s["rate"]
        budget = 1.0
        last = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            budget = min(budget + rate * (now - last), max(1.0, rate * 0.02))
            last = now
            while budget >= 1 and self.open + self.opening < self.s["count"]:
                self.spawn()
                budget -= 1
            if not self.full_reported and self.open >= self.s["count"]:
                self.full_reported = True
                emit("full", t=round(self.now(), 3), open=self.open, attempts=self.attempts)
            await asyncio.sleep(0.01)

    async def ticks(self) -> None:
        while True:
            emit(
                "tick",
                t=round(self.now(), 3),
                open=self.open,
                opening=self.opening,
                opened=self.opened,
                closed=self.closed_by_server,
                failed=sum(self.failed.values()),
            )
            await asyncio.sleep(1)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        def watch_stdin() -> None:
            # "stop" or the end of stdin (the caller went away): open no more.
            for line in sys.stdin:
                if line.strip() == "stop":
                    break
            loop.call_soon_threadsafe(self.stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
        ticker = loop.create_task(self.ticks())
        end = self.s["deadline"]
        try:
            await asyncio.wait_for(self.keep_open(), max(0.0, end - self.now()))
        except TimeoutError:
            self.stop.set()
        self.stopped_at = self.now()
        emit("stopping", t=round(self.stopped_at, 3), open=self.open, opening=self.opening)
        until = min(end, self.stopped_at + self.s["wait"])
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=max(0.0, until - self.now()))
        self.done.set()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
        ticker.cancel()

    def summary(self) -> dict[str, Any]:
        shakes = sorted(self.handshakes)
        return {
            "t": round(self.now(), 3),
            "attempts": self.attempts,
            "opened": self.opened,
            "failed": dict(self.failed),
            "max_open": self.max_open,
            "closed_by_server": self.closed_by_server,
            "closes": dict(self.closes),
            "answers": dict(self.answers),
            "ages": self.ages,
            "handshake_p50": round(shakes[len(shakes) // 2], 3) if shakes else None,
            "handshake_max": round(shakes[-1], 3) if shakes else None,
            "stopped_at": self.stopped_at,
            "last_close": round(self.last_close, 3),
            "left_open": self.left_open,
            "oldest_left": round(self.oldest_left, 3),
            "still_running": len(self.tasks),
            "cpu": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        }


def main() -> None:
    settings: Settings = json.loads(sys.argv[1])
    emit("start", pid=os.getpid())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = settings["count"] * 2 + 256
    if soft < want:
        limit = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    clients = SlowClients(settings)
    try:
        asyncio.run(clients.run())
    finally:
        emit("end", **clients.summary())


if __name__ == "__main__":
    main()
