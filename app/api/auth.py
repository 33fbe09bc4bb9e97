"""The routes' keys: `Depends(NEEDS[scope])` gives the route its Caller, or 401/403.

Each scope is one security dependency (an HTTPBearer, so the OpenAPI schema
shows the scheme on every route that takes a key) that authenticates and
checks its scope in one step: FastAPI solves no sub-dependency per request.

The operators' endpoints (/health, /metrics, /docs, /openapi.json) answer a
caller from APP_OPS_NETWORKS without a key, anyone else only with an
`admin` key.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from app.access import Authenticator, Caller, Refused, require
from app.keys import Scope

SCHEME = "ApiKey"
DESCRIPTION = (
    "An API key: `Authorization: Bearer qsk_…`. Scopes: tasks:submit (submit and "
    "cancel tasks), tasks:read, items:read, items:write, admin (everything, every owner)."
)


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.authenticator
    return auth


class KeyWithScope(HTTPBearer):
    """A key that must carry `scope`."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scheme_name=SCHEME, description=DESCRIPTION, auto_error=False)
        self.scope = scope

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        caller = await authenticator(request).caller(request.headers.get("authorization"))
        return require(caller, self.scope)


class OpsAccess(HTTPBearer):
    """From the operators' networks, no key; from elsewhere, an admin key."""

    def __init__(self) -> None:
        super().__init__(scheme_name=SCHEME, description=DESCRIPTION, auto_error=False)

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        networks = request.app.state.ops_networks
        client = request.client.host if request.client else None
        if client is not None and networks:
            try:
                address = ip_address(client)
            except ValueError:
                address = None
            if address is not None and any(address in network for network in networks):
                return
        caller = await authenticator(request).caller(request.headers.get("authorization"))
        require(caller, Scope.ADMIN)


# In the schema: a key, or none at all (from the operators' networks). FastAPI
# appends this alternative to the key it derives from OPS.
OPS_SECURITY: dict[str, Any] = {"security": [{}]}
NEEDS = {scope: KeyWithScope(scope) for scope in Scope}
OPS = OpsAccess()
Submitter = Annotated[Caller, Depends(NEEDS[Scope.TASKS_SUBMIT])]
TaskReader = Annotated[Caller, Depends(NEEDS[Scope.TASKS_READ])]
ItemReader = Annotated[Caller, Depends(NEEDS[Scope.ITEMS_READ])]
ItemWriter = Annotated[Caller, Depends(NEEDS[Scope.ITEMS_WRITE])]
Admin = Annotated[Caller, Depends(NEEDS[Scope.ADMIN])]


async def refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(Refused, refused)
