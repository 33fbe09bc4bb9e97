#!/usr/bin/env bash
# Bring the whole lab up on this machine: prepare the host (network guard
# first), controller tools, the Debian 13 box (cached), then
#   vagrant up --provider=lxc
# (seven hosts; site.yml runs once after the last) and the health checks.
# Stop it with: scripts/lab/down.sh  (vagrant destroy -f + teardown-host.sh)
#   QUEUESVC_APP_COUNT, QUEUESVC_MEMORY_MB: see the Vagrantfile.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
"$LAB_ROOT/scripts/lab/prepare-host.sh"
"$LAB_ROOT/scripts/lab/setup-tools.sh"
"$LAB_ROOT/scripts/lab/build-box.sh"
use_venv
cd "$LAB_ROOT"
export VAGRANT_CHECKPOINT_DISABLE=1
t0=$(date +%s)
vagrant up --provider=lxc
echo "vagrant_up_seconds=$(( $(date +%s) - t0 ))"
"$LAB_ROOT/scripts/lab/check-lab.sh"
