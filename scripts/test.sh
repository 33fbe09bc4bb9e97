#!/bin/sh
# The README's second command, and CI's (.ci/run), as root: every test, with a
# timing table at the end (scripts/lab/ci.py says what runs and the settings).
set -eu
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { apt-get update -q && apt-get install -y -q python3; }
exec python3 -m scripts.lab test
