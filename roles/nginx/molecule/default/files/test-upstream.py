#!/usr/bin/env python3
"""Stand-in for the API in the nginx role's molecule scenario.

Answers every method on every path with JSON naming this host, the request
and the headers nginx set; /api/big pads the answer (gzip test). With
--flaky, /api/flaky reads the request and closes the connection without an
answer, as a crashing server would, and /api/unavailable answers 503 with
Retry-After, as the app does while a dependency is down. A path with "slow"
in it is answered after SLOW_SECONDS (the connection limits' test).
Usage: test-upstream.py PORT [--flaky]
"""

import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
FLAKY = "--flaky" in sys.argv[2:]
SLOW_SECONDS = 2.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream uses it

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        left = length
        while left > 0:
            chunk = self.rfile.read(min(65536, left))
            if not chunk:
                break
            left -= len(chunk)
        if "slow" in self.path:
            time.sleep(SLOW_SECONDS)
        if FLAKY and self.path.startswith("/api/flaky"):
            self.close_connection = True
            return
        if FLAKY and self.path.startswith("/api/unavailable"):
            data = b'{"detail": "a dependency is unavailable"}'
            self.send_response(503)
            self.send_header("Retry-After", "2")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        body = {
            "host": socket.gethostname(),
            "method": self.command,
            "path": self.path,
            "received": length - left,
            "headers": {
                k: self.headers.get(k)
                for k in (
                    "Host",
                    "X-Forwarded-For",
                    "X-Forwarded-Proto",
                    "X-Request-ID",
                    "Connection",
                )
            },
        }
        if self.path.startswith("/api/big"):
            body["pad"] = "x" * 4096
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
