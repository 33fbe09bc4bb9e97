"""Liveness and dependency health: the body the README's tutorial reads (status, services)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.api.auth import OPS, OPS_SECURITY
from app.api.clients import api_clients
from app.api.responses import ERRORS, KEYED, documented
from app.schemas import ErrorBody, HealthReport

router = APIRouter(tags=["health"])


@router.get("/health/live", responses=documented())
async def live() -> dict[str, str]:
    """The process is up and serving; touches no dependency."""
    return {"status": "alive"}


@router.get(
    "/health",
    response_model=HealthReport,
    responses={
        **documented(*KEYED),
        # Unhealthy, or the in-flight limit's busy answer.
        503: {**ERRORS[503], "model": HealthReport | ErrorBody},
    },
    dependencies=[Depends(OPS)],
    openapi_extra=OPS_SECURITY,
)
async def health_check(request: Request) -> JSONResponse:
    """Each dependency probed concurrently, each bounded by APP_HEALTH_TIMEOUT_SECONDS;
    at most one probe per APP_HEALTH_CACHE_SECONDS per process (app.health)."""
    clients = api_clients(request)
    reasons = await clients.health.get()
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
    if healthy:
        return JSONResponse(body)
    # A 503 says when to look again, as every 503 of this API does.
    retry_after = str(clients.settings.retry_after_seconds)
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry_after})
