#!/usr/bin/env bash
# Watch the lab while CI runs it: every 2 s, if any lab host runs, the network
# guard must be complete (guard.sh check), and the lab's memory (sum of the
# hosts' cgroup usage at that instant) is sampled for its peak.
# Writes "samples= violations= peak_mb=" to $1 on every round; stops when the
# file $1.stop appears (or after 60 minutes).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
out=$1
samples=0; violations=0; peak=0
end=$(( $(date +%s) + 3600 ))
while [ ! -e "$out.stop" ] && [ "$(date +%s)" -lt "$end" ]; do
  running=$(lab_containers_running)
  if [ -n "$running" ]; then
    samples=$((samples + 1))
    if ! "$LAB_ROOT/scripts/lab/guard.sh" check >/dev/null 2>&1; then
      violations=$((violations + 1))
      echo "$(date +%T) guard incomplete while up: $(echo $running)" >>"$out.violations"
    fi
    now=0
    for c in $running; do
      for f in /sys/fs/cgroup/memory/lxc.payload.$c/memory.usage_in_bytes /sys/fs/cgroup/lxc.payload.$c/memory.current; do
        [ -r "$f" ] && { now=$((now + $(cat "$f"))); break; }
      done
    done
    [ $now -gt $peak ] && peak=$now
  fi
  echo "samples=$samples violations=$violations lab_memory_peak_mb=$((peak / 1048576))" >"$out"
  sleep 2
done
