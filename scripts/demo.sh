#!/bin/sh
# The README's first command, as root: the product on this machine, shown working.
#   bash scripts/demo.sh [lab|stop|local|local-stop]   (python3 -m scripts.lab --help)
set -eu
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { apt-get update -q && apt-get install -y -q python3; }
case "${1:-lab}" in
    lab) exec python3 -m scripts.lab demo ;;
    stop) exec python3 -m scripts.lab down ;;
    local | local-stop) exec python3 -m scripts.lab "$1" ;;
    *) echo "usage: bash scripts/demo.sh [lab|stop|local|local-stop]" >&2; exit 2 ;;
esac
