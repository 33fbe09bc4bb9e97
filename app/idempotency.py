"""Idempotency-Key on submits: a client that retries after a timeout gets its
first task back instead of a second one.

A key is claimed for 24 h (APP_IDEMPOTENCY_TTL_SECONDS) together with a
fingerprint of the request (the task's name and arguments), atomically with
the task's status record (app.status). The same key with the same request
answers the first task's id with 200; with another request, 422.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Printable ASCII without spaces, as the header's draft standard and the
# well-known APIs (Stripe: up to 255 characters) take it.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


class IdempotencyConflict(Exception):
    """The key was used before with a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request; "
            "use a new key for a new request"
        )


def fingerprint(task_name: str, args: list[Any]) -> str:
    """What makes two requests the same: the task and its arguments."""
    canonical = json.dumps([task_name, args], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
