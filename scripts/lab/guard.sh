#!/usr/bin/env bash
# The lab's network guard (nftables table "inet queuesvc_guard").
#
#   guard.sh apply    give every lab bridge its host address, load the table
#   guard.sh check    exit 0 only if the guard is complete (used by the
#                     Vagrantfile's before-up trigger and by the lab checks)
#   guard.sh remove   delete the table (teardown; refused while a lab host runs)
#
# Rules (DESIGN.md, "Network guard"):
#   - forwarded traffic from a lab bridge is dropped, except to the package
#     mirror's address(es) on tcp 80/443 (and traffic staying on its bridge);
#   - any packet to a lab subnet that would leave through a non-lab interface
#     is dropped, forwarded or sent by the host itself;
#   - the host accepts from lab bridges only DNS/DHCP (lxcbr0) and replies.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

join() { local IFS=,; echo "$*"; }
quoted_ifaces() { local i out=(); for i in "${LAB_BRIDGES[@]}"; do out+=("\"$i\""); done; join "${out[@]}"; }

ensure_bridge() {  # name cidr
  local br=$1 cidr=$2
  if ! ip link show "$br" >/dev/null 2>&1; then
    ip link add "$br" type bridge
  fi
  [[ $(ip -4 addr show dev "$br") == *" ${cidr} "* ]] || ip addr add "$cidr" dev "$br"
  ip link set "$br" up
}

ruleset() {
  local ifs subnets mirrors
  ifs=$(quoted_ifaces)
  subnets=$(join "${LAB_SUBNETS[@]}")
  mirrors=$(join $(mirror_addrs))
  local same=""
  local b
  for b in "${LAB_BRIDGES[@]}"; do
    same+="    iifname \"$b\" oifname \"$b\" accept comment \"stays on its bridge\""$'\n'
  done
  cat <<NFT
table inet $GUARD_TABLE {}
delete table inet $GUARD_TABLE
table inet $GUARD_TABLE {
  set lab_ifaces { type ifname; elements = { $ifs } }
  set lab_nets { type ipv4_addr; flags interval; elements = { $subnets } }
  set mirror { type ipv4_addr; elements = { $mirrors } }

  chain forward {
    type filter hook forward priority -10; policy accept;
$same    ip daddr @lab_nets oifname != @lab_ifaces counter drop comment "lab subnet via non-lab iface"
    iifname @lab_ifaces ip daddr @mirror tcp dport { 80, 443 } accept comment "package mirror"
    iifname @lab_ifaces counter drop comment "lab egress"
    oifname @lab_ifaces ct state established,related accept
    oifname @lab_ifaces counter drop comment "lab ingress"
  }
  chain output {
    type filter hook output priority -10; policy accept;
    ip daddr @lab_nets oifname != @lab_ifaces oifname != "lo" counter drop comment "lab subnet via non-lab iface"
  }
  chain input {
    type filter hook input priority -10; policy accept;
    iifname @lab_ifaces ct state established,related accept
    iifname "$LXC_BRIDGE" udp dport { 53, 67 } accept comment "lxc-net dnsmasq"
    iifname "$LXC_BRIDGE" tcp dport 53 accept comment "lxc-net dnsmasq"
    iifname @lab_ifaces meta l4proto { icmp, ipv6-icmp } accept
    iifname @lab_ifaces counter drop comment "lab to host"
  }
}
NFT
}

apply() {
  need_root
  command -v nft >/dev/null || apt_install nftables
  # Rules first, then the addresses: nothing can race out the default route.
  ruleset | nft -f -
  ensure_bridge "$LAB_BRIDGE" "$LAB_HOST_ADDR"
  # lxcbr0 is created by lxc-net, the podman bridge by podman; when they
  # exist already they must carry their host address too (checked below).
  log "network guard applied (table inet $GUARD_TABLE)"
}

check() {
  local ok=0 b
  # QUEUESVC_GUARD_TABLE: look for another table name (ci.sh uses it to prove
  # that the Vagrantfile refuses to start a host when the guard is absent,
  # without dropping the real guard other runs may rely on).
  local GUARD_TABLE=${QUEUESVC_GUARD_TABLE:-$GUARD_TABLE}
  if ! nft list table inet "$GUARD_TABLE" >/tmp/.${LAB_SLUG}-guard.$$ 2>/dev/null; then
    echo "guard: table inet $GUARD_TABLE missing" >&2; rm -f /tmp/.${LAB_SLUG}-guard.$$; return 1
  fi
  local have; have=$(cat /tmp/.${LAB_SLUG}-guard.$$); rm -f /tmp/.${LAB_SLUG}-guard.$$
  for pat in 'hook forward' 'hook output' 'hook input' 'comment "lab egress"' \
             'comment "lab subnet via non-lab iface"' 'comment "package mirror"'; do
    grep -qF "$pat" <<<"$have" || { echo "guard: rule missing: $pat" >&2; ok=1; }
  done
  local m
  for m in $(mirror_addrs); do
    grep -qF "$m" <<<"$have" || { echo "guard: mirror address $m not in the allow set" >&2; ok=1; }
  done
  # Every lab bridge present on the host must carry its host address.
  local i
  for i in "${!LAB_BRIDGES[@]}"; do
    b=${LAB_BRIDGES[$i]}
    ip link show "$b" >/dev/null 2>&1 || continue
    local want
    case "$b" in
      "$LAB_BRIDGE") want=$LAB_HOST_ADDR ;;
      "$LXC_BRIDGE") want=$LXC_HOST_ADDR ;;
      *) want=$MOL_HOST_ADDR ;;
    esac
    [[ $(ip -4 addr show dev "$b") == *" ${want} "* ]] || { echo "guard: bridge $b lacks host address $want" >&2; ok=1; }
  done
  ip link show "$LAB_BRIDGE" >/dev/null 2>&1 || { echo "guard: lab bridge $LAB_BRIDGE missing" >&2; ok=1; }
  [ $ok -eq 0 ] && echo "guard: ok (table inet $GUARD_TABLE, bridges addressed)"
  return $ok
}

remove() {
  need_root
  if [ -n "$(lab_containers_running)" ]; then
    die "lab hosts still running; refusing to drop the guard: $(lab_containers_running | tr '\n' ' ')"
  fi
  if [ -n "$(molecule_containers)" ]; then
    die "molecule containers on $MOL_NETWORK; refusing to drop the guard: $(molecule_containers | tr '\n' ' ')"
  fi
  nft delete table inet "$GUARD_TABLE" 2>/dev/null || true
  log "network guard removed"
}

case "${1:-}" in
  apply) apply ;;
  check) check ;;
  remove) remove ;;
  print) ruleset ;;
  *) echo "usage: $0 apply|check|remove|print" >&2; exit 2 ;;
esac
