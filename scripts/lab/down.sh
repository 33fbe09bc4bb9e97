#!/usr/bin/env bash
# Stop the lab and undo the host preparation (see teardown-host.sh).
set -euo pipefail
exec "$(dirname "$0")/teardown-host.sh" "$@"
