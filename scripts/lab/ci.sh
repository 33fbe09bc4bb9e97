#!/usr/bin/env bash
# Every check of the lab and the roles, for CI (called by .ci/run) and for a
# person: run as root from the repo, e.g. `sudo bash scripts/lab/ci.sh`.
#   1. host preparation (network guard first), controller tools
#   2. yamllint + ansible-lint (production profile)
#   3. the Debian 13 box and the Debian 13/12 podman images (built or cached)
#   4. molecule test of every role's scenarios, three at a time
#   5. the guard test: without the guard, `vagrant up` refuses to start a host;
#      from here on a watcher checks the guard every 2 s while a host is up
#   6. vagrant up --provider=lxc of the seven hosts (site.yml provisions them)
#   7. checks from the controller (scripts/lab/check-lab.sh)
#   8. a second site.yml run over the lab changes nothing
#   9. the data tier answers the app servers and nothing else
#      (ansible/lab-check-data.yml), the end-to-end tests through lb1
#      (tests/e2e: rolling deploy and rollback under load included), the fault
#      drills (tests/faults), and the benchmark through lb1
#  10. vagrant destroy -f, then teardown, and a check that nothing is left —
#      always, also after a failure (trap)
# Prints "lab-timing:" lines and a final "N passed, N failed" line.
#
# QUEUESVC_LAB_TIERS: "all" (default, what CI runs) tests every role's
# scenarios and deploys every tier, then the data checks, the end-to-end
# tests, the fault drills and the benchmark through lb1; "common" tests the
# common role and provisions the lab with site.yml's common tier only (a
# quick look).
# QUEUESVC_MOLECULE_ROLES: the roles whose scenarios run ("none": skip).
# Safe to run twice; leaves nothing running or configured on the host.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
cd "$LAB_ROOT"
export HOME=${HOME:-/root}
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_NO_COLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 ANSIBLE_NOCOLOR=1

passed=0; failed=0; timings=(); failures=()
START=$(date +%s)

step() {  # step NAME COMMAND... : run, time, count
  local name=$1; shift
  local t0 rc=0
  t0=$(date +%s)
  log "=== $name"
  "$@" || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  timings+=("$name=${dt}s")
  if [ $rc -eq 0 ]; then passed=$((passed + 1)); log "=== $name: ok (${dt}s)"
  else failed=$((failed + 1)); failures+=("$name"); log "=== $name: FAILED rc=$rc (${dt}s)"; fi
  return $rc
}

WATCH=/tmp/${LAB_SLUG}-watch.$$
WATCH_PID=

# The guard watch: any sample with a lab host up and the guard incomplete fails CI.
watch_verdict() {
  [ -n "$WATCH_PID" ] || return 0
  touch "$WATCH.stop"; wait "$WATCH_PID" 2>/dev/null; WATCH_PID=
  WATCH_LINE=$(cat "$WATCH" 2>/dev/null)
  log "guard watch: $WATCH_LINE"
  [ -f "$WATCH.violations" ] && cat "$WATCH.violations" >&2
  [[ $WATCH_LINE == *" violations=0 "* ]] && [[ $WATCH_LINE != "samples=0 "* ]]
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -d .vagrant/machines ]; then
    t0=$(date +%s)
    log "=== vagrant destroy -f"
    if vagrant destroy -f >/tmp/${LAB_SLUG}-destroy.log 2>&1; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("vagrant-destroy"); tail -n 20 /tmp/${LAB_SLUG}-destroy.log >&2; fi
    timings+=("vagrant-destroy=$(( $(date +%s) - t0 ))s")
  fi
  [ -z "$WATCH_PID" ] || step guard-watch watch_verdict
  rm -f "$WATCH" "$WATCH.stop" "$WATCH.violations"
  step teardown "$LAB_ROOT/scripts/lab/teardown-host.sh"
  step host-clean host_is_clean
  echo
  echo "lab-timing: total=$(( $(date +%s) - START ))s ${timings[*]}"
  [ -n "${BOX_LINE:-}" ] && echo "lab-timing: $BOX_LINE"
  [ -n "${MEM_LINE:-}" ] && echo "lab-timing: per-host peaks summed: $MEM_LINE"
  [ -n "${WATCH_LINE:-}" ] && echo "lab-timing: sampled every 2 s: $WATCH_LINE"
  [ ${#failures[@]} -eq 0 ] || echo "lab: failed steps: ${failures[*]}"
  echo "$passed passed, $failed failed"
  [ $failed -eq 0 ] && [ $rc -eq 0 ] && exit 0
  exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM

# Nothing of the lab may be left after teardown. The one exception is
# molecule containers of another checkout still running on this machine
# (never in CI): then the podman network, its settings and the guard stay,
# as teardown-host.sh explains; this run's own containers must be gone.
host_is_clean() {
  local bad=0 foreign
  foreign=$(molecule_containers)
  [ -z "$(lxc-ls -1 2>/dev/null | grep "^${LAB_SLUG}-" || true)" ] || { log "left: lxc containers"; bad=1; }
  ! ip link show "$LAB_BRIDGE" >/dev/null 2>&1 || { log "left: $LAB_BRIDGE"; bad=1; }
  ! ip link show "$LXC_BRIDGE" >/dev/null 2>&1 || { log "left: $LXC_BRIDGE"; bad=1; }
  [ ! -f /run/lxc/network_up ] || { log "left: lxc-net"; bad=1; }
  ! grep -q "${LAB_SLUG}-lab" /etc/default/lxc-net 2>/dev/null || { log "left: /etc/default/lxc-net block"; bad=1; }
  [ ! -e "$LAB_ETC" ] || { log "left: $LAB_ETC"; bad=1; }
  local mine
  mine=$(grep -E "^($(own_molecule_names | paste -sd'|'))$" <<<"$foreign" || true)
  [ -z "$mine" ] || { log "left: this run's molecule containers: $mine"; bad=1; }
  if [ -n "$foreign" ]; then
    log "note: molecule containers of another checkout still run ($(echo $foreign)); podman network, podman settings and guard kept for them"
  else
    ! nft list table inet "$GUARD_TABLE" >/dev/null 2>&1 || { log "left: nft guard"; bad=1; }
    ! podman network exists "$MOL_NETWORK" 2>/dev/null || { log "left: podman network"; bad=1; }
    [ ! -e /etc/containers/containers.conf.d/50-${LAB_SLUG}-lab.conf ] || { log "left: containers.conf drop-in"; bad=1; }
  fi
  return $bad
}

# Names of the platforms of the molecule scenarios this run tests.
own_molecule_names() {
  local files=() role
  if [ -n "${MOLECULE_ROLE_NAMES:-}" ]; then
    for role in $MOLECULE_ROLE_NAMES; do files+=("$LAB_ROOT"/roles/"$role"/molecule/*/molecule.yml); done
  else
    files=("$LAB_ROOT"/roles/*/molecule/*/molecule.yml)
  fi
  sed -n 's/^  - name: *//p' "${files[@]}" 2>/dev/null
}

lint() {
  yamllint --strict . && ansible-lint
}

box() {
  local out
  out=$("$LAB_ROOT/scripts/lab/build-box.sh") || return 1
  echo "$out"
  local cold="" f
  for f in "$LAB_CACHE"/*/cold-seconds; do
    [ -f "$f" ] && cold+=" $(basename "$(dirname "$f")" | cut -d- -f1)=$(cat "$f")s"
  done
  BOX_LINE="$(echo $out)${cold:+ (cold builds of the cached images:$cold)}"
}

LAB_TIERS=${QUEUESVC_LAB_TIERS:-all}
case $LAB_TIERS in
  all) SITE_TAGS=""; MOLECULE_ROLE_NAMES="" ;;
  common) SITE_TAGS=common; MOLECULE_ROLE_NAMES=common ;;
  *) die "QUEUESVC_LAB_TIERS must be all or common" ;;
esac
# QUEUESVC_MOLECULE_ROLES overrides which roles' scenarios run ("none": skip).
MOLECULE_ROLE_NAMES=${QUEUESVC_MOLECULE_ROLES:-$MOLECULE_ROLE_NAMES}
export QUEUESVC_SITE_TAGS=$SITE_TAGS
# Scenarios run QUEUESVC_MOLECULE_JOBS (3) at a time: most of their time is
# spent waiting on apt and systemd, not on CPU.
molecule_all() {
  local args=(-j "${QUEUESVC_MOLECULE_JOBS:-3}") role
  [ "$MOLECULE_ROLE_NAMES" != none ] || { log "molecule skipped (QUEUESVC_MOLECULE_ROLES=none)"; return 0; }
  for role in $MOLECULE_ROLE_NAMES; do args+=(-r "$role"); done
  "$LAB_ROOT/scripts/lab/molecule.sh" "${args[@]}" test
}

# Without the guard, the Vagrantfile's trigger must refuse to start a host.
guard_refuses_up() {
  [ -z "$(lab_containers_running)" ] || { log "lab hosts already running"; return 1; }
  # The real guard stays up (molecule runs of other checkouts may rely on it);
  # the trigger is pointed at a table that does not exist instead.
  local rc=0
  QUEUESVC_GUARD_TABLE=${LAB_SLUG}_guard_absent vagrant up lb1 --provider=lxc \
    >/tmp/${LAB_SLUG}-noguard.log 2>&1 || rc=$?
  "$LAB_ROOT/scripts/lab/guard.sh" check >/dev/null || return 1
  if [ $rc -eq 0 ] || lxc-ls -1 | grep -q "^${LAB_SLUG}-"; then
    log "vagrant up started a host without the network guard"; return 1
  fi
  grep -q "network guard missing" /tmp/${LAB_SLUG}-noguard.log || { tail -n 20 /tmp/${LAB_SLUG}-noguard.log >&2; return 1; }
  log "without the guard, vagrant up refused to start (as it must)"
}

vagrant_up() {
  vagrant up --provider=lxc >/tmp/${LAB_SLUG}-up.log 2>&1 || { tail -n 60 /tmp/${LAB_SLUG}-up.log >&2; return 1; }
  grep -E 'PLAY RECAP' -A 10 /tmp/${LAB_SLUG}-up.log || true
}

check_lab() {
  "$LAB_ROOT/scripts/lab/check-lab.sh" >/tmp/${LAB_SLUG}-check.log 2>&1 || { cat /tmp/${LAB_SLUG}-check.log >&2; return 1; }
  grep -E 'guard|PLAY RECAP|^[a-z0-9]+ +: ok=|lab_hosts=' /tmp/${LAB_SLUG}-check.log
  MEM_LINE=$(grep '^lab_hosts=' /tmp/${LAB_SLUG}-check.log || true)
}

# A second provisioning of the running lab changes nothing.
idempotent_site() {
  ansible-playbook -i inventories/vagrant site.yml ${SITE_TAGS:+--tags "$SITE_TAGS"} \
    >/tmp/${LAB_SLUG}-site2.log 2>&1 || { tail -n 40 /tmp/${LAB_SLUG}-site2.log >&2; return 1; }
  grep -A 10 'PLAY RECAP' /tmp/${LAB_SLUG}-site2.log
  ! grep -E 'changed=[1-9]' /tmp/${LAB_SLUG}-site2.log
}

# The data tier answers the app servers with the app's credentials, and
# none of its ports is reachable from lb1 (ansible/lab-check-data.yml).
check_data() {
  ansible-playbook -i inventories/vagrant ansible/lab-check-data.yml >/tmp/${LAB_SLUG}-data.log 2>&1 \
    || { tail -n 60 /tmp/${LAB_SLUG}-data.log >&2; return 1; }
  grep -A 10 'PLAY RECAP' /tmp/${LAB_SLUG}-data.log
}

# The whole system through lb1: end-to-end tests (rolling deploy included),
# then the service's benchmark against lb1, same wrk settings.
LAB_LB_URL=${LAB_LB_URL:-https://192.168.56.10}
e2e() {
  QUEUESVC_E2E_URL=$LAB_LB_URL QUEUESVC_E2E_VERIFY=no \
  QUEUESVC_E2E_INVENTORY="$LAB_ROOT/inventories/vagrant" QUEUESVC_ANSIBLE_BIN="$VENV/bin" \
    "$LAB_ROOT/.venv/bin/pytest" -p no:cacheprovider -q -rA tests/e2e
}
# Fault drills through lb1 (tests/faults): each fault injected from this
# machine (lxc-attach, lxc-stop/lxc-start) under bounded load, each restored.
faults() {
  QUEUESVC_E2E_URL=$LAB_LB_URL QUEUESVC_E2E_VERIFY=no \
  QUEUESVC_E2E_INVENTORY="$LAB_ROOT/inventories/vagrant" QUEUESVC_ANSIBLE_BIN="$VENV/bin" \
    "$LAB_ROOT/.venv/bin/pytest" -p no:cacheprovider -q -rA tests/faults
}
bench_lb() {
  "$LAB_ROOT/.venv/bin/python" bench/run.py --url "$LAB_LB_URL" --duration 8 --runs 1
}

# One lab per machine: whatever an earlier run or another checkout left
# (hosts named queuesvc-*, host settings) goes first.
if [ -n "$(lxc-ls -1 2>/dev/null | grep "^${LAB_SLUG}-" || true)" ] \
   || nft list table inet "$GUARD_TABLE" >/dev/null 2>&1; then
  log "leftovers of an earlier lab found: tearing down first"
  "$LAB_ROOT/scripts/lab/teardown-host.sh" || true
fi
step prepare-host "$LAB_ROOT/scripts/lab/prepare-host.sh"
step tools "$LAB_ROOT/scripts/lab/setup-tools.sh"
use_venv
step lint lint || true
step box box
step molecule molecule_all || true
"$LAB_ROOT/scripts/lab/watch.sh" "$WATCH" &
WATCH_PID=$!
step guard-refuses-up guard_refuses_up
step vagrant-up vagrant_up
step lab-checks check_lab || true
step site-idempotent idempotent_site || true
if [ "$LAB_TIERS" = all ]; then
  step data-checks check_data || true
  step e2e e2e || true
  step faults faults || true
  step bench-lb bench_lb || true
fi
exit 0
