"""Read `curl -d` bodies as JSON.

The tutorial's examples (`curl -X POST .../api/items -d '{"name": ...}'`) send
JSON under curl's default form content type. Every body this API takes is JSON
(the one upload is multipart), so a form-encoded body is parsed as JSON; a
body that is not JSON still gets a 422 that says so.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

FORM = b"application/x-www-form-urlencoded"


class FormBodyAsJson:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = scope["headers"]
            if any(
                name == b"content-type" and value.split(b";")[0].strip().lower() == FORM
                for name, value in headers
            ):
                scope = dict(scope)
                scope["headers"] = [
                    (name, b"application/json" if name == b"content-type" else value)
                    for name, value in headers
                ]
        await self.app(scope, receive, send)
