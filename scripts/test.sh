#!/usr/bin/env bash
# The test suite: installs and starts what it needs (idempotent), then lint,
# type checks, unit and integration tests of the service, the systemd units,
# and the static checks of the deployment (yamllint, ansible-lint). Run as
# root on Debian 12/13. The deployment's test bed (molecule for every role,
# the seven-host lab, end-to-end tests) is scripts/lab/ci.sh; with
# QUEUESVC_LAB=1 this script runs it too.
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
if [[ -n ${QUEUESVC_LAB:-} ]]; then
    echo "== the deployment: molecule for every role, the lab, end to end"
    bash scripts/lab/ci.sh
fi
