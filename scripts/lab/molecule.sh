#!/usr/bin/env bash
# `molecule <command>` (default: test) for every role under roles/ that has a
# molecule/ directory, or for the roles named with -r. Needs the podman
# network and image: run prepare-host.sh and build-box.sh first (up.sh and
# ci.sh do).
#   scripts/lab/molecule.sh                 molecule test, every role
#   scripts/lab/molecule.sh -r common converge
set -euo pipefail
. "$(dirname "$0")/lib.sh"
roles=()
while getopts r: o; do case $o in r) roles+=("$OPTARG") ;; *) exit 2 ;; esac; done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- test
if [ ${#roles[@]} -eq 0 ]; then
  for d in "$LAB_ROOT"/roles/*/molecule; do [ -d "$d" ] && roles+=("$(basename "$(dirname "$d")")"); done
fi
use_venv
podman network exists "$MOL_NETWORK" 2>/dev/null || die "podman network $MOL_NETWORK missing: run scripts/lab/prepare-host.sh"
for img in "$IMAGE_NAME:latest" "localhost/${LAB_SLUG}-debian12:latest"; do
  podman image exists "$img" || die "image $img missing: run scripts/lab/build-box.sh"
done
"$LAB_ROOT/scripts/lab/guard.sh" check >/dev/null || die "network guard missing: run scripts/lab/prepare-host.sh"
QUEUESVC_MIRROR_IP=$(mirror_addrs | head -n1)
export QUEUESVC_MIRROR_IP
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
for r in "${roles[@]}"; do
  log "molecule $* ($r)"
  t0=$(date +%s)
  (cd "$LAB_ROOT/roles/$r" && molecule "$@")
  echo "molecule_${1}_${r}_seconds=$(( $(date +%s) - t0 ))"
done
