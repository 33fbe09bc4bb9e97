# shellcheck shell=bash
# Shared settings and helpers for the lab scripts (sourced, never executed).
# Every name the lab creates on the host starts with the project slug, so
# teardown can find exactly what prepare added and nothing else.

LAB_SLUG=queuesvc
LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB_CACHE=${QUEUESVC_LAB_CACHE:-/var/cache/${LAB_SLUG}-lab}
LAB_STATE=/run/${LAB_SLUG}-lab             # runtime state (gone at reboot)
LAB_ETC=/etc/${LAB_SLUG}-lab               # config files prepare-host writes

# The lab's private network (VirtualBox's host-only range, so laptops match).
LAB_BRIDGE=${LAB_SLUG}0
LAB_SUBNET=192.168.56.0/24
LAB_HOST_ADDR=192.168.56.1/24
# LXC's own NAT bridge (lxc-net defaults): the lab hosts' eth0, DHCP + DNS.
LXC_BRIDGE=lxcbr0
LXC_SUBNET=10.0.3.0/24
LXC_HOST_ADDR=10.0.3.1/24
# Podman network for molecule containers.
MOL_NETWORK=${LAB_SLUG}-molecule
MOL_SUBNET=10.89.56.0/24
MOL_HOST_ADDR=10.89.56.1/24

# podman picks the molecule bridge's name (cni-podmanN on podman 4, which has
# no --interface-name); ask it. Empty while the network does not exist.
mol_bridge() {
  command -v podman >/dev/null 2>&1 || return 0
  podman network inspect "$MOL_NETWORK" --format '{{.NetworkInterface}}' 2>/dev/null || true
}
MOL_BRIDGE=$(mol_bridge)
LAB_BRIDGES=("$LAB_BRIDGE" "$LXC_BRIDGE")
if [ -n "$MOL_BRIDGE" ]; then LAB_BRIDGES+=("$MOL_BRIDGE"); fi
LAB_SUBNETS=("$LAB_SUBNET" "$LXC_SUBNET" "$MOL_SUBNET")

GUARD_TABLE=${LAB_SLUG}_guard              # nft table: inet queuesvc_guard
MIRROR_HOST=deb.debian.org
MIRROR_URL=http://${MIRROR_HOST}/debian
BOX_NAME=${LAB_SLUG}/debian13
IMAGE_NAME=localhost/${LAB_SLUG}-debian13
VENV=${LAB_ROOT}/.venv-ansible

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (the lab changes host networking)"; }

# Debian release of the host: 12 or 13 (others: best effort as 13).
host_release() {
  local v
  v=$(. /etc/os-release && echo "${VERSION_ID:-}")
  case "$v" in 12|13) echo "$v" ;; *) echo 13 ;; esac
}

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep '^install ok installed' >/dev/null || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y \
    --no-install-recommends "${missing[@]}" >/dev/null
}

# IPv4 addresses of the package mirror, resolved on the controller.
mirror_addrs() {
  local a
  a=$(getent ahostsv4 "$MIRROR_HOST" | awk '{print $1}' | sort -u)
  [ -n "$a" ] || die "cannot resolve $MIRROR_HOST on the controller"
  echo "$a"
}

# Lab containers running now (the Vagrantfile names them queuesvc-<host>).
lab_containers_running() {
  command -v lxc-ls >/dev/null 2>&1 || return 0
  lxc-ls --running -1 2>/dev/null | grep "^${LAB_SLUG}-" || true
}

# Containers on the molecule network, any state (ours or another checkout's).
molecule_containers() {
  command -v podman >/dev/null 2>&1 || return 0
  podman network exists "$MOL_NETWORK" 2>/dev/null || return 0
  podman ps -a --filter "network=$MOL_NETWORK" --format '{{.Names}}' 2>/dev/null || true
}

# Activate the project's Python tools (ansible, molecule, linters).
use_venv() {
  [ -x "$VENV/bin/ansible-playbook" ] || die "no $VENV: run scripts/lab/setup-tools.sh"
  export PATH="$VENV/bin:$PATH"
  export ANSIBLE_CONFIG="$LAB_ROOT/ansible.cfg"
}
