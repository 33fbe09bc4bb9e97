#!/usr/bin/env bash
# The README's main command: the product on this one machine.
#   scripts/demo.sh          the service on loopback with its real RabbitMQ, Redis
#                            and the MongoDB emulator (scripts/local-demo.sh), and
#                            the tutorial's requests
#   scripts/demo.sh stop     stop it
#   scripts/demo.sh lab      the seven-host lab (Vagrant + lxc): prepare the host,
#                            build the box if needed, vagrant up (site.yml converges
#                            every tier), then a smoke check through lb1
#   scripts/demo.sh lab-stop destroy the lab and undo the host preparation
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
LB=${LAB_LB_URL:-https://192.168.56.10}
cd "$REPO"

case ${1:-local} in
    local) exec bash scripts/local-demo.sh ;;
    stop) exec bash scripts/local-demo.sh stop ;;
    lab-stop) exec bash scripts/lab/down.sh ;;
    lab) ;;
    *) echo "usage: scripts/demo.sh [local|stop|lab|lab-stop]" >&2; exit 2 ;;
esac

# The controller builds the app's wheelhouse with the project's virtualenv.
bash scripts/python-env.sh
bash scripts/lab/up.sh

# The lab's certificate is self-signed on lb1 (-k); see inventories/vagrant.
bash scripts/smoke.sh "$LB" -k
printf '\n== the lab is up: %s (API docs at %s/docs); stop it with: scripts/demo.sh lab-stop\n' "$LB" "$LB"
