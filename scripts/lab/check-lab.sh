#!/usr/bin/env bash
# Checks of a lab that is up, from the controller: the network guard is in
# place (and cannot be dropped while a lab host runs), then
# ansible/lab-check.yml over inventories/vagrant; prints the lab's memory.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
use_venv
cd "$LAB_ROOT"

running=$(lab_containers_running)
[ -n "$running" ] || die "no lab host is running"
log "guard test: lab hosts up: $(echo $running | tr '\n' ' ')"
"$LAB_ROOT/scripts/lab/guard.sh" check
if "$LAB_ROOT/scripts/lab/guard.sh" remove 2>/dev/null; then
  "$LAB_ROOT/scripts/lab/guard.sh" apply
  die "guard.sh remove succeeded while lab hosts run"
fi
nft list table inet "$GUARD_TABLE" >/dev/null || die "guard gone"
log "guard test: in place, and removal is refused while hosts run"

ansible-playbook -i inventories/vagrant ansible/lab-check.yml

"$LAB_ROOT/scripts/lab/lab-memory.sh"
