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

say() { printf '\n== %s\n' "$*"; }
# The lab's certificate is self-signed on lb1 (-k); see inventories/vagrant.
say "curl -k $LB/health"
curl -sk "$LB/health"; echo
say "curl -k -X POST $LB/api/items -d '{\"name\": \"Test Item\"}'"
curl -sk -X POST "$LB/api/items" -d '{"name": "Test Item"}'; echo
say "curl -k -X POST $LB/api/async/process -d '{\"data\": \"heavy task\", \"iterations\": 100}'"
submitted=$(curl -sk -X POST "$LB/api/async/process" -d '{"data": "heavy task", "iterations": 100}')
echo "$submitted"
task_id=$(sed -E 's/.*"task_id":"([^"]+)".*/\1/' <<<"$submitted")
say "curl -k $LB/api/async/status/$task_id (until it finishes)"
status=""
for _ in $(seq 150); do
    status=$(curl -sk "$LB/api/async/status/$task_id")
    grep -qE '"status":"(SUCCESS|FAILURE|REVOKED)"' <<<"$status" && break
    sleep 0.2
done
echo "$status" | cut -c1-300
grep -q '"status":"SUCCESS"' <<<"$status" || { echo "smoke check failed" >&2; exit 1; }
say "the lab is up: $LB (API docs at $LB/docs); stop it with: scripts/demo.sh lab-stop"
