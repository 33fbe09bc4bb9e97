#!/usr/bin/env bash
# Memory of the running lab hosts, from their cgroups: the sum of each
# host's peak (an upper bound of the lab's peak) and of their current use.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
peak=0; cur=0; n=0
for c in $(lab_containers_running); do
  for d in /sys/fs/cgroup/memory/lxc.payload.$c /sys/fs/cgroup/lxc.payload.$c; do
    [ -d "$d" ] || continue
    if [ -f "$d/memory.max_usage_in_bytes" ]; then
      p=$(cat "$d/memory.max_usage_in_bytes"); u=$(cat "$d/memory.usage_in_bytes")
    else
      p=$(cat "$d/memory.peak" 2>/dev/null || cat "$d/memory.current"); u=$(cat "$d/memory.current")
    fi
    peak=$((peak + p)); cur=$((cur + u)); n=$((n + 1))
    break
  done
done
echo "lab_hosts=$n lab_memory_peak_mb=$((peak / 1048576)) lab_memory_now_mb=$((cur / 1048576))"
