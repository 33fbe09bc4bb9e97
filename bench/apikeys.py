"""The benchmark's API keys. Locally: a key made with the operators' command
(`python -m app keys create`) for an owner of this run only. Against a
deployment: the key in QUEUESVC_BENCH_KEY (a tenant key with tasks:submit)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping

from app.keys import Scope
from tests.integration.services import create_key

# A tenant's key: every scope but admin.
TENANT_SCOPES = frozenset(Scope) - {Scope.ADMIN}
DEPLOYED_KEY_VARIABLE = "QUEUESVC_BENCH_KEY"


def run_owner(role: str) -> str:
    """An owner of this run only: its quotas (kept in Redis, which outlives
    the run) start afresh."""
    return f"bench-{role}-{secrets.token_hex(4)}"


def local_key(env: dict[str, str], owner: str, scopes: frozenset[Scope] = TENANT_SCOPES) -> str:
    """A new key for `owner`, in the MongoDB and Redis that `env` names."""
    return str(create_key(env, owner, ",".join(sorted(scopes)))["key"])


def authorization(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def deployed_key(environ: Mapping[str, str] = os.environ) -> str:
    key = environ.get(DEPLOYED_KEY_VARIABLE, "").strip()
    if not key:
        raise SystemExit(
            f"{DEPLOYED_KEY_VARIABLE} is not set: every request to the API needs a key. "
            "Give a tenant key with the tasks:submit scope (for the lab: "
            f"{DEPLOYED_KEY_VARIABLE}=$(python3 -m scripts.lab api-key demo))"
        )
    return key
