"""Slow clients against the load balancer: run INSIDE a lab container, not by pytest.

tests/faults/test_slow_clients.py passes this file's text to `python3 -c` in a
data-tier container (a lab host that lb1 does not exempt from its per-client
limits), with one argument: a JSON object of settings (see `Settings`).
Standard library only (the containers' python3).

Opens `count` connections (TLS unless `tls` is false) to host:port, at most
`rate` attempts a second, then sends a request's header one byte every
`interval` seconds, never finishing it. Until stdin says "stop" (or ends),
every connection the server closes is replaced, so `count` stay open; then it
opens no more and waits at most `wait` seconds for the server to close the
rest, and closes those itself. Whatever happens it ends `deadline` seconds
after its start at the latest.

One non-blocking socket per connection and a selector (no asyncio: its TLS
transport buffers 256 KiB per connection, too much for a lab host's 768 MiB).
The address space is capped at `max_memory_mb` (a failed allocation ends the
script, never the host's services), and past `max_rss_mb` resident it opens
no more connections (reported).

It prints JSON lines on stdout: {"event": "start", "pid"}, {"event": "tick"}
every second (connections open, opening, opened, closed by the server,
failed), {"event": "full"} once `count` are open, {"event": "stopping"}, and
{"event": "end"} with the totals and the age of each connection the server
closed when it did (seconds from its connection attempt).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import resource
import selectors
import socket
import ssl
import sys
import time
from typing import Any, TypedDict

# A request that is never finished: the request line, then one header whose
# value grows by a byte every interval.
HEADER_START = b"GET /health/live HTTP/1.1\r\nHost: %s\r\nX-Slow-Client: "
PAGE = os.sysconf("SC_PAGE_SIZE")


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
    max_rss_mb: int  # resident memory past which no connection is opened
    max_memory_mb: int  # address space limit (RLIMIT_AS)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


class Conn:
    """One slow client: "connecting", "handshake", then "open"."""

    def __init__(self, sock: socket.socket, began: float) -> None:
        self.sock = sock
        self.began = began
        self.state = "connecting"
        self.sent = 0
        self.next_send = 0.0
        self.answer = b""


class SlowClients:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.header = HEADER_START % settings["host"].encode()
        self.started = time.monotonic()
        self.selector = selectors.DefaultSelector()
        self.pending: set[Conn] = set()  # connecting or in the TLS handshake
        self.conns: set[Conn] = set()  # open
        self.due: collections.deque[Conn] = collections.deque()  # open, by next_send
        self.max_open = 0
        self.attempts = 0
        self.opened = 0
        self.failed: collections.Counter[str] = collections.Counter()
        self.closed_by_server = 0
        self.closes: collections.Counter[str] = collections.Counter()  # eof, reset, ...
        self.answers: collections.Counter[str] = collections.Counter()  # status lines
        self.ages: list[float] = []  # age of each connection the server closed
        self.handshakes: list[float] = []  # seconds from attempt to open
        self.last_close = 0.0  # seconds since the start
        self.stopped_at: float | None = None
        self.left_open = 0  # closed by us at the end
        self.oldest_left = 0.0
        self.memory_capped = False
        self.max_rss = 0.0
        self.context: ssl.SSLContext | None = None
        if settings["tls"]:
            # The lab's certificate is self-signed: no verification.
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
            self.context.set_alpn_protocols(["http/1.1"])

    def now(self) -> float:
        return time.monotonic() - self.started

    # --- one connection ------------------------------------------------------------------

    def attempt(self) -> None:
        self.attempts += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        conn = Conn(sock, time.monotonic())
        code = sock.connect_ex((self.s["host"], self.s["port"]))
        if code not in (0, errno.EINPROGRESS):
            self.fail(conn, errno.errorcode.get(code, str(code)))
            return
        self.pending.add(conn)
        self.selector.register(sock, selectors.EVENT_WRITE, conn)

    def fail(self, conn: Conn, why: str) -> None:
        self.failed[why] += 1
        self.pending.discard(conn)
        self.drop(conn)

    def drop(self, conn: Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()

    def connected(self, conn: Conn) -> None:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(conn, errno.errorcode.get(code, str(code)))
            return
        if self.context is None:
            self.established(conn)
            return
        self.selector.unregister(conn.sock)
        conn.sock = self.context.wrap_socket(conn.sock, do_handshake_on_connect=False)
        conn.state = "handshake"
        self.selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        self.handshake(conn)

    def handshake(self, conn: Conn) -> None:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        except (OSError, ssl.SSLError) as exc:
            self.fail(conn, type(exc).__name__)
            return
        self.established(conn)

    def established(self, conn: Conn) -> None:
        self.pending.discard(conn)
        conn.state = "open"
        self.conns.add(conn)
        self.opened += 1
        self.max_open = max(self.max_open, len(self.conns))
        self.handshakes.append(time.monotonic() - conn.began)
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        conn.next_send = time.monotonic()
        self.due.append(conn)
        self.send(conn)

    def send(self, conn: Conn) -> None:
        """The header's next byte (past its start, "x" for ever)."""
        byte = self.header[conn.sent : conn.sent + 1] or b"x"
        try:
            if conn.sock.send(byte) == 1:
                conn.sent += 1
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            pass
        except ConnectionResetError:
            self.closed(conn, "reset")
            return
        except (OSError, ssl.SSLError) as exc:
            self.closed(conn, type(exc).__name__)
            return
        conn.next_send += self.s["interval"]

    def readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return  # e.g. a TLS 1.3 session ticket: no application data
        except ConnectionResetError:
            self.closed(conn, "reset")
            return
        except (OSError, ssl.SSLError) as exc:
            self.closed(conn, type(exc).__name__)
            return
        if data:
            conn.answer += data[:1024]  # an answer (e.g. 408): the close follows
        else:
            self.closed(conn, "eof after answer" if conn.answer else "eof")

    def closed(self, conn: Conn, how: str) -> None:
        """The server closed the connection."""
        self.conns.discard(conn)
        self.closed_by_server += 1
        self.closes[how] += 1
        self.ages.append(round(time.monotonic() - conn.began, 3))
        self.last_close = self.now()
        if conn.answer:
            self.answers[conn.answer.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
        self.drop(conn)

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        s = self.s
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.selector.register(stdin, selectors.EVENT_READ, None)
        stdin_text = b""
        budget = 1.0
        last = time.monotonic()
        next_tick = 0.0
        full = False
        while True:
            now = time.monotonic()
            elapsed = now - self.started
            if self.stopped_at is None and elapsed >= s["deadline"]:
                self.stopping()
            if self.stopped_at is not None and (
                not (self.conns or self.pending)
                or elapsed >= min(s["deadline"], self.stopped_at + s["wait"])
            ):
                break
            # New connections, at `rate` at most, while fewer than `count`.
            budget = min(budget + s["rate"] * (now - last), max(1.0, s["rate"] * 0.02))
            last = now
            while (
                self.stopped_at is None
                and not self.memory_capped
                and budget >= 1
                and len(self.conns) + len(self.pending) < s["count"]
            ):
                self.attempt()
                budget -= 1
            if not full and len(self.conns) >= s["count"]:
                full = True
                emit("full", t=round(elapsed, 3), open=len(self.conns), attempts=self.attempts)
            # Handshakes that take too long.
            for conn in [c for c in self.pending if now - c.began > s["connect_timeout"]]:
                self.fail(conn, "timeout")
            # Header bytes that are due.
            while self.due and self.due[0].next_send <= now:
                conn = self.due.popleft()
                if conn in self.conns:
                    self.send(conn)
                    if conn in self.conns:
                        self.due.append(conn)
            for key, _ in self.selector.select(timeout=0.01):
                if key.data is None:
                    try:
                        chunk = os.read(stdin, 1024)
                    except BlockingIOError:
                        continue
                    stdin_text += chunk
                    if not chunk or b"stop" in stdin_text:
                        self.selector.unregister(stdin)
                        if self.stopped_at is None:
                            self.stopping()
                    continue
                conn = key.data
                if conn.state == "connecting":
                    self.connected(conn)
                elif conn.state == "handshake":
                    self.handshake(conn)
                elif conn in self.conns:
                    self.readable(conn)
            if elapsed >= next_tick:
                next_tick = elapsed + 1
                rss = rss_mb()
                self.max_rss = max(self.max_rss, rss)
                if rss > s["max_rss_mb"]:
                    self.memory_capped = True
                emit(
                    "tick",
                    t=round(elapsed, 3),
                    open=len(self.conns),
                    opening=len(self.pending),
                    opened=self.opened,
                    closed=self.closed_by_server,
                    failed=sum(self.failed.values()),
                    rss_mb=round(rss),
                )
        for conn in list(self.conns):
            self.left_open += 1
            self.oldest_left = max(self.oldest_left, time.monotonic() - conn.began)
            self.drop(conn)
        for conn in list(self.pending):
            self.fail(conn, "unfinished")
        self.conns.clear()

    def stopping(self) -> None:
        self.stopped_at = self.now()
        emit(
            "stopping",
            t=round(self.stopped_at, 3),
            open=len(self.conns),
            opening=len(self.pending),
        )

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
            "cpu": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
            "max_rss_mb": round(self.max_rss),
            "memory_capped": self.memory_capped,
        }


def main() -> None:
    settings: Settings = json.loads(sys.argv[1])
    emit("start", pid=os.getpid())
    memory = settings["max_memory_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = settings["count"] * 2 + 256
    if soft < want:
        limit = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    clients = SlowClients(settings)
    try:
        clients.run()
    finally:
        emit("end", **clients.summary())


if __name__ == "__main__":
    main()
