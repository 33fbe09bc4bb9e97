"""Liveness and dependency health: the body the README's tutorial reads (status, services)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.clients import api_clients

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and serving; touches no dependency."""
    return {"status": "alive"}


@router.get("/health", responses={503: {"description": "A dependency is unreachable"}})
async def health_check(request: Request) -> JSONResponse:
    """Each dependency probed concurrently, each bounded by APP_HEALTH_TIMEOUT_SECONDS;
    at most one probe per APP_HEALTH_CACHE_SECONDS per process (app.health)."""
    reasons = await api_clients(request).health.get()
    healthy = all(reason is None for reason in reasons.values())
    body: dict[str, Any] = {
        "status": "healthy" if healthy else "unhealthy",
        "services": {
            name: "connected" if reason is None else "disconnected"
            for name, reason in reasons.items()
        },
    }
    if not healthy:
        # A category only ("unreachable", "timed out", "login refused"): the
        # reason, with addresses, is in the log.
        body["errors"] = {name: reason for name, reason in reasons.items() if reason}
    return JSONResponse(body, status_code=200 if healthy else 503)
