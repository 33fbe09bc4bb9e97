"""Quotas per owner: how fast it may submit, and how much unfinished work it may have.

Both are kept in Redis, so every app server counts against the same totals,
and checked by the script that creates a task's status record (app.status),
so a check and its spending are one atomic step. A submit over either gets
429 with Retry-After: the seconds until the rate allows the next submit, or
APP_RETRY_AFTER_SECONDS while the owner's tasks in flight cost too much.
"""

from __future__ import annotations

import math

from prometheus_client import Counter

from app.settings import Settings
from app.status import Quotas

REFUSED = Counter(
    "queuesvc_quota_refusals_total",
    "Submits refused with 429: over the submit rate or the in-flight cost",
    ["kind"],
)


class QuotaExceeded(Exception):
    def __init__(self, kind: str, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.kind = kind
        self.retry_after = retry_after


def from_settings(settings: Settings) -> Quotas:
    return Quotas(
        rate=settings.quota_submit_rate,
        burst=settings.quota_submit_burst,
        in_flight_cost=settings.quota_in_flight_cost,
    )


def exceeded(
    kind: str, owner: str, wait: float | None, quotas: Quotas, fallback: int
) -> QuotaExceeded:
    """The 429 for an owner over its `kind` of quota."""
    REFUSED.labels(kind).inc()
    if kind == "rate":
        detail = (
            f"owner {owner!r} is over its submit rate ({quotas.rate:g}/s, "
            f"bursts of {quotas.burst}); the task was not accepted"
        )
        return QuotaExceeded(kind, detail, max(1, math.ceil(wait or 0)))
    detail = (
        f"owner {owner!r} has unfinished tasks costing up to its cap of "
        f"{quotas.in_flight_cost} (iterations or CSV rows); the task was not accepted"
    )
    return QuotaExceeded(kind, detail, fallback)
