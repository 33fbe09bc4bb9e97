#!/usr/bin/env bash
# The README's main command: the product on this one machine.
#   scripts/demo.sh [lab]     the seven-host lab (Vagrant + lxc): prepare the host
#                             (network guard first), build the box if needed,
#                             vagrant up (site.yml converges every tier), then the
#                             tutorial's requests through lb1 and a task to SUCCESS
#   scripts/demo.sh stop      destroy the lab and undo the host preparation
#   scripts/demo.sh local     the service alone on loopback with its real RabbitMQ,
#                             Redis and the MongoDB emulator (scripts/local-demo.sh)
#   scripts/demo.sh local-stop  stop that
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
LB=${LAB_LB_URL:-https://192.168.56.10}
cd "$REPO"

case ${1:-lab} in
    local) exec bash scripts/local-demo.sh ;;
    local-stop) exec bash scripts/local-demo.sh stop ;;
    stop) exec bash scripts/lab/down.sh ;;
    lab) ;;
    *) echo "usage: scripts/demo.sh [lab|stop|local|local-stop]" >&2; exit 2 ;;
esac

# The controller builds the app's wheelhouse with the project's virtualenv.
bash scripts/python-env.sh
bash scripts/lab/up.sh

# The lab's certificate is self-signed on lb1 (-k); see inventories/vagrant.
bash scripts/smoke.sh "$LB" -k
printf '\n== the lab is up: %s (API docs at %s/docs); stop it with: scripts/demo.sh stop\n' "$LB" "$LB"
