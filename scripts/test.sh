#!/usr/bin/env bash
# The whole test suite: installs and starts what it needs (idempotent), then
# lint, type checks, unit and integration tests of the service, then every
# check of the deployment (scripts/lab/ci.sh: lint, molecule for every role,
# the seven-host lab, end-to-end tests). Run as root on Debian 12/13.
# QUEUESVC_SKIP_LAB=1 stops after the service's tests.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PYTHONDONTWRITEBYTECODE=1

echo "== services (RabbitMQ, Redis, MongoDB emulator environment)"
bash scripts/dev-services.sh
echo "== python environment"
bash scripts/python-env.sh
echo "== lint and types"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "== systemd units"
bash scripts/verify-units.sh
echo "== unit and integration tests"
.venv/bin/pytest -p no:cacheprovider -q -ra --durations=5 tests/unit tests/integration
if [[ -z ${QUEUESVC_SKIP_LAB:-} ]]; then
    echo "== the deployment: roles, lab, end to end"
    bash scripts/lab/ci.sh
fi
