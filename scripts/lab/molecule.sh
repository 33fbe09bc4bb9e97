#!/usr/bin/env bash
# `molecule <command>` (default: test) for the molecule scenarios of every
# role under roles/, or of the roles named with -r. Needs the podman network
# and images: run prepare-host.sh and build-box.sh first (up.sh and ci.sh do).
#   scripts/lab/molecule.sh                       molecule test, every scenario
#   scripts/lab/molecule.sh -r common converge    one role, default scenario
#   scripts/lab/molecule.sh -j 3                  three scenarios at a time
# -s SCENARIO limits the run to that scenario name (default: every scenario
# of each role for `test`, the default scenario for other commands).
# With -j, each scenario logs to $MOLECULE_LOG_DIR/<role>-<scenario>.log and
# the log's tail is printed when it fails. Scenario container names are
# unique per scenario, so scenarios can run side by side.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
roles=(); jobs=1; only=""
while getopts r:j:s: o; do
  case $o in r) roles+=("$OPTARG") ;; j) jobs=$OPTARG ;; s) only=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- test
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "-j needs a positive number"
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

# role/scenario pairs to run
runs=()
for r in "${roles[@]}"; do
  [ -d "$LAB_ROOT/roles/$r/molecule" ] || die "role $r has no molecule scenarios"
  for d in "$LAB_ROOT/roles/$r/molecule"/*/; do
    s=$(basename "$d")
    if [ -n "$only" ]; then [ "$s" = "$only" ] || continue
    elif [ "$1" != test ]; then [ "$s" = default ] || continue
    fi
    runs+=("$r/$s")
  done
done
[ ${#runs[@]} -gt 0 ] || die "no scenario matches"

one() {  # one ROLE/SCENARIO ARGS... : molecule in the role's directory, timed
  local r=${1%/*} s=${1#*/} t0 rc=0; shift
  t0=$(date +%s)
  (cd "$LAB_ROOT/roles/$r" && molecule "$@" -s "$s") || rc=$?
  echo "molecule_${1}_${r}_${s}_seconds=$(( $(date +%s) - t0 )) rc=$rc"
  return $rc
}

if [ "$jobs" -eq 1 ]; then
  for run in "${runs[@]}"; do log "molecule $* ($run)"; one "$run" "$@"; done
  exit 0
fi

LOGS=${MOLECULE_LOG_DIR:-/tmp/${LAB_SLUG}-molecule}
mkdir -p "$LOGS"
declare -A pid_of=()
failed=()
reap() {  # wait for one finished scenario and report it
  local pid run rc=0
  wait -n -p pid "${!pid_of[@]}" || rc=$?
  run=${pid_of[$pid]}; unset "pid_of[$pid]"
  grep '^molecule_.*_seconds=' "$LOGS/${run/\//-}.log" | tail -n1 || true
  if [ $rc -ne 0 ]; then
    failed+=("$run"); log "molecule $run FAILED (rc=$rc): last lines of $LOGS/${run/\//-}.log"
    tail -n 40 "$LOGS/${run/\//-}.log" >&2
  fi
}
for run in "${runs[@]}"; do
  while [ ${#pid_of[@]} -ge "$jobs" ]; do reap; done
  log "molecule $* ($run) -> $LOGS/${run/\//-}.log"
  one "$run" "$@" >"$LOGS/${run/\//-}.log" 2>&1 &
  pid_of[$!]=$run
done
while [ ${#pid_of[@]} -gt 0 ]; do reap; done
[ ${#failed[@]} -eq 0 ] || die "failed scenarios: ${failed[*]}"
