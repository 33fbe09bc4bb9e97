"""What a request body may be, in one ASGI layer: JSON, and not too large.

Size: a body over its path's limit is refused with a JSON 413 before it is
read into memory, whether its length is declared or it is streamed. A
streamed body that grows past the limit gets the 413 at once; the app then
sees a client disconnect and whatever it answers is dropped.

JSON under curl's form type: the tutorial's examples (`curl -X POST
.../api/items -d '{"name": ...}'`) send JSON under curl's default
`application/x-www-form-urlencoded`. Every body this API takes is JSON (the one
upload is multipart), so a form-encoded body is read as JSON; a body that is
not JSON still gets a 422 that says so.

One layer, not two: every request crosses each middleware, and these two
look at the same thing.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORM = b"application/x-www-form-urlencoded"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _form_as_json(scope: Scope) -> Scope:
    headers = scope["headers"]
    if not any(
        name == b"content-type" and value.split(b";")[0].strip().lower() == FORM
        for name, value in headers
    ):
        return scope
    scope = dict(scope)
    scope["headers"] = [
        (name, b"application/json" if name == b"content-type" else value) for name, value in headers
    ]
    return scope


class RequestBody:
    """Reads form-typed bodies as JSON; answers 413 over a path's size limit."""

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in BODY_METHODS:
            scope = _form_as_json(scope)
        limit = self.limits.get(scope["path"], self.default_limit)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(send, limit)
            return
        received = 0
        started = rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        rejected = True
                        await _reject(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
