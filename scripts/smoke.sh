#!/usr/bin/env bash
# The tutorial's requests against a running API, and a task run to SUCCESS:
#   scripts/smoke.sh BASE_URL [CURL_OPTION...]      e.g. https://192.168.56.10 -k
set -euo pipefail
base=${1:?usage: smoke.sh BASE_URL [CURL_OPTION...]}
shift
say() { printf '\n== %s\n' "$*"; }
say "curl $base/health"
health=$(curl -s "$@" "$base/health")
echo "$health"
grep -q '"status":"healthy"' <<<"$health" || { echo "smoke check failed: not healthy" >&2; exit 1; }
say "curl -X POST $base/api/items -d '{\"name\": \"Test Item\"}'"
curl -s "$@" -X POST "$base/api/items" -d '{"name": "Test Item"}'; echo
say "curl -X POST $base/api/async/process -d '{\"data\": \"heavy task\", \"iterations\": 100}'"
submitted=$(curl -s "$@" -X POST "$base/api/async/process" -d '{"data": "heavy task", "iterations": 100}')
echo "$submitted"
task_id=$(sed -E 's/.*"task_id":"([^"]+)".*/\1/' <<<"$submitted")
say "curl $base/api/async/status/$task_id (until it finishes)"
status=""
for _ in $(seq 150); do
    status=$(curl -s "$@" "$base/api/async/status/$task_id")
    grep -qE '"status":"(SUCCESS|FAILURE|REVOKED)"' <<<"$status" && break
    sleep 0.2
done
echo "$status" | cut -c1-300
grep -q '"status":"SUCCESS"' <<<"$status" || { echo "smoke check failed" >&2; exit 1; }
