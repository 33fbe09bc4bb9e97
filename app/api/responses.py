"""The documented error responses of every route, in one place.

A route lists the codes it can answer besides its success, `responses=documented(404)`;
`ALWAYS` adds those any route can answer: a code every route gains (401, 403 and 429 for
API keys and quotas, say) is its entry in `ERRORS` and its number in `ALWAYS`. FastAPI
adds 422 (HTTPValidationError, the list shape) to every route with a parameter or a body;
our own 422s keep that shape.
"""

from __future__ import annotations

from typing import Any

from app.schemas import ErrorBody

Responses = dict[int | str, dict[str, Any]]

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (APP_RETRY_AFTER_SECONDS)",
        "required": True,
        "schema": {"type": "integer"},
    }
}
ERRORS: dict[int, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be decoded"},
    401: {
        "model": ErrorBody,
        "description": "No API key, or one that is malformed, unknown, expired or revoked",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    },
    403: {"model": ErrorBody, "description": "The API key lacks the scope this route needs"},
    404: {"model": ErrorBody, "description": "No resource has this id"},
    409: {"model": ErrorBody, "description": "The resource's state does not allow this"},
    413: {"model": ErrorBody, "description": "The body is over this route's size limit"},
    415: {"model": ErrorBody, "description": "The upload is not CSV text"},
    429: {
        "model": ErrorBody,
        "description": "The key's owner is over its submit rate or its in-flight cost",
        "headers": RETRY_AFTER,
    },
    500: {"model": ErrorBody, "description": "Internal error (logged)"},
    503: {
        "model": ErrorBody,
        "description": "The server is busy (in-flight limit), or a dependency it needs "
        "is unreachable or full; the detail says which",
        "headers": RETRY_AFTER,
    },
}
# Any route: the in-flight limit's 503 comes before routing, the catch-all 500 after.
ALWAYS = (500, 503)
# Any route that reads a body: undecodable (400) or too large (413).
BODY = (400, 413)
# Any route that takes an API key (the routers of items and tasks, for all their routes).
KEYED = (401, 403)


def keyed() -> Responses:
    """A router's `responses=` when every route of it takes an API key."""
    return {code: ERRORS[code] for code in KEYED}


def documented(*codes: int) -> Responses:
    """The `responses=` of a route that can answer `codes`, besides `ALWAYS`."""
    return {code: ERRORS[code] for code in sorted({*codes, *ALWAYS})}
