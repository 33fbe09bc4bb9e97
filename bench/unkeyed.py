"""A benchmark baseline, never deployed: the service without its key check.

`create_app()` builds the service's app (app.main.create_app()) with every
key dependency (app.api.auth.NEEDS, and OPS) overridden by one that returns a
fixed caller: the owner in QUEUESVC_BENCH_OWNER (the benchmark's tenant, so
that it sees the same items), every scope but admin. bench/run.py serves it
next to the service with the same settings and sends both the same keyed
requests in the same rounds: the difference is what the key check costs.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from app import main
from app.access import Caller
from app.api import auth
from bench.apikeys import TENANT_SCOPES

OWNER_VARIABLE = "QUEUESVC_BENCH_OWNER"


def create_app() -> FastAPI:
    app = main.create_app()
    caller = Caller(key_id="bench-unkeyed", owner=os.environ[OWNER_VARIABLE], scopes=TENANT_SCOPES)

    async def fixed_caller() -> Caller:
        return caller

    async def anyone() -> None:
        """The operators' endpoints, open as from the operators' networks."""

    for dependency in auth.NEEDS.values():
        app.dependency_overrides[dependency] = fixed_caller
    app.dependency_overrides[auth.OPS] = anyone
    return app
