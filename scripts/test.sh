#!/usr/bin/env bash
# The test suite: installs and starts what it needs (idempotent), then lint,
# type checks, unit and integration tests of the service, the systemd units,
# the static checks of the deployment (yamllint, ansible-lint), and the lab
# (scripts/lab/ci.sh: molecule, the seven-host lab, its checks; always torn
# down). Run as root on Debian 12/13.
#   QUEUESVC_LAB_TIERS=all (default) or common: see scripts/lab/ci.sh
#   QUEUESVC_SKIP_LAB=1: stop after the service's tests
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
echo "== the deployment's code: yamllint, ansible-lint (production profile)"
bash scripts/lab/setup-tools.sh
(cd "$REPO" && .venv-ansible/bin/yamllint --strict . && ANSIBLE_CONFIG="$REPO/ansible.cfg" .venv-ansible/bin/ansible-lint)
echo "== unit and integration tests"
.venv/bin/pytest -p no:cacheprovider -q -ra --durations=5 tests/unit tests/integration
if [[ -z ${QUEUESVC_SKIP_LAB:-} ]]; then
    echo "== the lab: molecule, seven hosts, checks (tiers: ${QUEUESVC_LAB_TIERS:-all})"
    QUEUESVC_LAB_TIERS=${QUEUESVC_LAB_TIERS:-all} bash scripts/lab/ci.sh
fi
