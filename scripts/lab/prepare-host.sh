#!/usr/bin/env bash
# Prepare this Debian 12 or 13 host for the lxc lab and for molecule/podman.
# Idempotent: a second run changes nothing. Undo with teardown-host.sh.
#
# Order matters: the network guard goes up before LXC's network, so no lab
# address is ever routed out of the machine.
#   1. Debian packages (on Debian 13, vagrant-lxc from the bookworm suite of
#      the same mirror, pinned so nothing else comes from bookworm)
#   2. podman settings: runc, ulimits (containers.conf.d drop-in)
#   3. podman network "queuesvc-molecule" (10.89.56.0/24) for molecule
#   4. network guard (nftables) + the lab bridge queuesvc0 with 192.168.56.1
#   5. lxc-net (lxcbr0 10.0.3.1, NAT) with a dnsmasq that answers only the
#      mirror's names (no upstream DNS)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root

REL=$(host_release)
log "preparing host (Debian $REL)"
mkdir -p "$LAB_STATE" "$LAB_ETC"

# ---------------------------------------------------------------- 1. packages
# lxc-templates: the box's lxc-config includes its debian.common.conf (only a
# Recommends of lxc, so --no-install-recommends would leave it out).
BASE_PKGS=(vagrant lxc lxc-templates debootstrap debian-archive-keyring podman runc
           nftables dnsmasq-base iproute2 sudo rsync python3-venv ca-certificates curl)
apt_install "${BASE_PKGS[@]}"

if [ "$REL" = 12 ]; then
  apt_install vagrant-lxc
elif ! dpkg-query -W -f='${Status}' vagrant-lxc 2>/dev/null | grep 'ok installed' >/dev/null; then
  # Debian 13 has no vagrant-lxc: the bookworm package (Ruby, arch all) works
  # with trixie's vagrant. Take it from the same mirror; pin bookworm low so
  # that this source can never upgrade anything else.
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb .*debian/{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$MIRROR_URL
  log "Debian 13: vagrant-lxc from bookworm at $mirror"
  cat >/etc/apt/sources.list.d/${LAB_SLUG}-lab-bookworm.sources <<SRC
# Added by queuesvc scripts/lab/prepare-host.sh (removed by teardown-host.sh)
Types: deb
URIs: $mirror
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >/etc/apt/preferences.d/${LAB_SLUG}-lab-bookworm <<'PIN'
# Added by queuesvc scripts/lab/prepare-host.sh: only vagrant-lxc from bookworm
Package: *
Pin: release n=bookworm
Pin-Priority: 1

Package: vagrant-lxc
Pin: release n=bookworm
Pin-Priority: 500
PIN
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y \
    --no-install-recommends vagrant-lxc >/dev/null
fi
vagrant plugin list 2>/dev/null | grep vagrant-lxc >/dev/null || die "vagrant-lxc plugin not visible to vagrant"

# ------------------------------------------------------------- 2. podman
CONF_D=/etc/containers/containers.conf.d
CONF=$CONF_D/50-${LAB_SLUG}-lab.conf
mkdir -p "$CONF_D"
want=$(cat <<'CONF'
# Added by queuesvc scripts/lab/prepare-host.sh (removed by teardown-host.sh).
# runc: crun rejects hybrid cgroup layouts; ulimits: root here cannot raise
# limits past these, and podman's defaults ask for more.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
)
[ "$(cat "$CONF" 2>/dev/null)" = "$want" ] || { printf '%s\n' "$want" >"$CONF"; log "wrote $CONF"; }

# ------------------------------------------------------------- 3. podman net
if ! podman network exists "$MOL_NETWORK" 2>/dev/null; then
  log "podman network create $MOL_NETWORK"
  # No bridge exists until a container starts; the guard (next) names it.
  # --disable-dns: no DNS forwarder on this bridge (mirror via /etc/hosts).
  podman network create --subnet "$MOL_SUBNET" --gateway "${MOL_HOST_ADDR%/*}" \
    --disable-dns "$MOL_NETWORK" >/dev/null
fi

# ------------------------------------------------------------- 4. guard
[ -f "$LAB_STATE/ip_forward.orig" ] || cat /proc/sys/net/ipv4/ip_forward >"$LAB_STATE/ip_forward.orig"
"$LAB_ROOT/scripts/lab/guard.sh" apply

# ------------------------------------------------------------- 5. lxc-net
DNSMASQ_CONF=$LAB_ETC/dnsmasq.conf
{
  echo "# lxc-net's dnsmasq for the queuesvc lab: the mirror's names only, no upstream."
  echo "no-resolv"
  echo "no-hosts"
  echo "domain-needed"
  echo "bogus-priv"
  for a in $(mirror_addrs); do echo "address=/$MIRROR_HOST/$a"; done
} >"$DNSMASQ_CONF.new"
dns_changed=0
if ! cmp -s "$DNSMASQ_CONF.new" "$DNSMASQ_CONF"; then mv "$DNSMASQ_CONF.new" "$DNSMASQ_CONF"; dns_changed=1; else rm -f "$DNSMASQ_CONF.new"; fi

DEFAULT=/etc/default/lxc-net
BEGIN="# BEGIN ${LAB_SLUG}-lab (prepare-host.sh; removed by teardown-host.sh)"
END="# END ${LAB_SLUG}-lab"
if ! grep -qF "$BEGIN" "$DEFAULT" 2>/dev/null; then
  printf '%s\nUSE_LXC_BRIDGE="true"\nLXC_DHCP_CONFILE=%s\n%s\n' "$BEGIN" "$DNSMASQ_CONF" "$END" >>"$DEFAULT"
  dns_changed=1
fi
LXC_NET=/usr/libexec/lxc/lxc-net
[ -x "$LXC_NET" ] || LXC_NET=$(dpkg -L lxc 2>/dev/null | grep -m1 '/lxc-net$')
if [ -f /run/lxc/network_up ] && [ $dns_changed -eq 1 ] && [ -z "$(lab_containers_running)" ]; then
  log "lxc-net restart (dnsmasq settings changed)"
  "$LXC_NET" stop force >/dev/null 2>&1 || true
fi
if [ ! -f /run/lxc/network_up ]; then
  log "lxc-net start"
  "$LXC_NET" start
  touch "$LAB_STATE/lxc-net-started"
fi

"$LAB_ROOT/scripts/lab/guard.sh" check
log "host ready"
