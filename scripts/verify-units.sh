#!/usr/bin/env bash
# `systemd-analyze verify` of the unit files in systemd/, offline: in a scratch
# root holding the system's own units and stand-in executables at the paths
# the units name (the real ones exist only on a deployed host).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/bin"
cp -r /lib/systemd/system "$root/usr/lib/systemd/"
cp /bin/kill "$root/bin/"
cp "$REPO"/systemd/*.service "$root/etc/systemd/system/"
for exe in $(grep -ho '^ExecStart=[^ ]*' "$REPO"/systemd/*.service | cut -d= -f2 | sort -u); do
    mkdir -p "$root$(dirname "$exe")"
    printf '#!/bin/sh\n' >"$root$exe"
    chmod +x "$root$exe"
done
units=()
for file in "$REPO"/systemd/*.service; do
    name=$(basename "$file")
    [[ $name == *@.service ]] && name=${name/@.service/@default.service}
    units+=("$name")
done
out=$(systemd-analyze verify --man=no --generators=no --root="$root" "${units[@]}" 2>&1) || { echo "$out"; exit 1; }
[[ -z $out ]] || { echo "$out"; exit 1; }
echo "systemd-analyze verify: clean (${units[*]})"
