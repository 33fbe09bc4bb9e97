#!/usr/bin/env bash
# Build, on the controller, the wheelhouse the app role installs from: the
# project's wheel plus every dependency as binary wheels for the hosts' Python,
# at the versions in constraints.txt. Hosts never reach PyPI.
#
#   scripts/build-wheelhouse.sh PYTHON_VERSION [ARCH [LABEL]]   e.g. 3.13 x86_64
#
# LABEL, when given, is appended to the release name (a redeploy of the same
# code as a new release, e.g. to rehearse a rolling deploy).
# Cached by a hash of its inputs (sources, pyproject.toml, constraints.txt,
# target); prints one JSON line: {"version", "release", "archive", "built"}.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
pyver=${1:?usage: build-wheelhouse.sh PYTHON_VERSION [ARCH]}
arch=${2:-x86_64}
label=${3:-}
[[ $pyver =~ ^3\.[0-9]+$ ]] || { echo "bad Python version: $pyver" >&2; exit 2; }
[[ $label =~ ^[A-Za-z0-9._]*$ ]] || { echo "bad release label: $label" >&2; exit 2; }
out_root=${QUEUESVC_BUILD_DIR:-$REPO/.build}/wheelhouse
cd "$REPO"

version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
inputs_hash=$( { git ls-files -z app pyproject.toml constraints.txt README.md 2>/dev/null \
                   | xargs -0 sha256sum; echo "$pyver $arch"; } | sha256sum | cut -c1-10)
release="$version-$inputs_hash${label:+-$label}"
dir="$out_root/py$pyver-$release"
archive="$dir.tar.gz"
built=false
if [[ ! -s $archive ]]; then
    python=${PYTHON:-$REPO/.venv/bin/python}
    [[ -x $python ]] || python=python3
    tmp=$(mktemp -d "$out_root.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$out_root"; mktemp -d "$out_root.tmp.XXXXXX"; })
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/wheelhouse"
    "$python" -m pip wheel -q --no-deps -w "$tmp/wheelhouse" . >&2
    platforms=()
    for tag in manylinux2014 manylinux_2_17 manylinux_2_28 manylinux_2_31 manylinux_2_34; do
        platforms+=(--platform "${tag}_$arch")
    done
    "$python" -m pip download -q -d "$tmp/wheelhouse" -c constraints.txt --only-binary=:all: \
        --implementation cp --python-version "$pyver" "${platforms[@]}" \
        "$tmp"/wheelhouse/queuesvc-"$version"-*.whl >&2
    echo "$release" >"$tmp/wheelhouse/RELEASE"
    cp README.md "$tmp/README.md"
    tar -C "$tmp" -czf "$tmp/archive.tar.gz" wheelhouse README.md
    mkdir -p "$out_root"
    rm -rf "$dir"; mv "$tmp/wheelhouse" "$dir"
    mv "$tmp/archive.tar.gz" "$archive"
    built=true
fi
printf '{"version": "%s", "release": "%s", "archive": "%s", "built": %s}\n' \
    "$version" "$release" "$archive" "$built"
