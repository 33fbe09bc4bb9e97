#!/usr/bin/env bash
# Create (or update) the project's virtualenv in .venv with the service and its
# dev tools, at the versions pinned in constraints.txt. Idempotent.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
cd "$REPO"
if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "ok installed" \
        && ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv python3-pip >/dev/null
fi
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [[ ! -e $stamp ]]; then
    .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
