#!/usr/bin/env bash
# Controller tools in the repo's .venv-ansible (gitignored), pinned by
# requirements-ansible.txt; reinstalled only when that file changes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
REQ=$LAB_ROOT/requirements-ansible.txt
PY=${PYTHON:-python3}
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -x "$VENV/bin/ansible-playbook" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if ! "$PY" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  apt_install python3-venv
  PY=/usr/bin/python3
fi
log "installing controller tools into $VENV"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >"$VENV/pip-install.log" 2>&1 \
  || { tail -n 30 "$VENV/pip-install.log" >&2; die "pip install failed"; }
echo "$want" >"$stamp"
