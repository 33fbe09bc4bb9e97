"""A client at a steady pace: one request every 1/rate seconds by the clock
for a duration, whatever the answers do (open loop: a slow answer delays no
other request, as with independent users), each answer's status and latency
recorded."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer (timeout, connection refused or reset)
    seconds: float


async def _paced(
    url: str, headers: Mapping[str, str], body: Any, rate: float, duration: float, timeout_s: float
) -> list[Answer]:
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(headers=dict(headers), timeout=timeout_s, limits=limits) as client:

        async def send() -> Answer:
            sent = time.monotonic()
            try:
                status: int | None = (await client.post(url, json=body)).status_code
            except httpx.HTTPError:
                status = None
            return Answer(status, time.monotonic() - sent)

        started = time.monotonic()
        sending = []
        for number in range(math.ceil(rate * duration)):
            await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
            sending.append(asyncio.create_task(send()))
        return list(await asyncio.gather(*sending))


def paced_posts(
    url: str,
    *,
    headers: Mapping[str, str],
    body: Any,
    rate: float,
    duration: float,
    timeout_s: float = 10,
) -> list[Answer]:
    """POST `body` as JSON at `rate` per second for `duration` seconds."""
    return asyncio.run(_paced(url, headers, body, rate, duration, timeout_s))


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (share 0.99: p99) of `values`, not empty."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]
