#!/usr/bin/env bash
# Undo prepare-host.sh and stop the lab: destroy the lab hosts, stop lxc-net,
# delete the lab bridge, the podman network and molecule leftovers, the guard
# (last, once no lab host runs) and every file prepare-host.sh wrote.
# Kept on purpose (they are not running and configure nothing): installed
# Debian packages, the box cache under /var/cache/queuesvc-lab, the registered
# box and podman image, the repo's .venv-ansible. `--purge` removes the cache,
# box and image too.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
need_root
purge=0; [ "${1:-}" = "--purge" ] && purge=1

cd "$LAB_ROOT"
# 1. lab hosts
if [ -d .vagrant/machines ] && command -v vagrant >/dev/null 2>&1; then
  log "vagrant destroy -f"
  vagrant destroy -f >/dev/null 2>&1 || log "vagrant destroy reported an error (continuing)"
fi
for c in $(lxc-ls -1 2>/dev/null | grep "^${LAB_SLUG}-" || true); do
  log "lxc-destroy leftover $c"
  lxc-stop -k -n "$c" >/dev/null 2>&1 || true
  lxc-destroy -n "$c" >/dev/null 2>&1 || true
done
# Molecule destroys its own containers. Containers still on the molecule
# network belong to a molecule run of another checkout (or a crashed one):
# they are not removed here, and while they exist the podman network, the
# podman settings and the guard stay (they are lab hosts too).
mol_left=$(molecule_containers)
if [ -n "$mol_left" ]; then
  log "molecule containers on $MOL_NETWORK remain ($(echo $mol_left)): keeping the podman network, podman settings and the guard; remove them (podman rm -f ...) and run teardown again"
elif command -v podman >/dev/null 2>&1 && podman network exists "$MOL_NETWORK" 2>/dev/null; then
  podman network rm "$MOL_NETWORK" >/dev/null && log "podman network rm $MOL_NETWORK"
fi

# 2. lxc-net (only if prepare-host.sh configured it)
DEFAULT=/etc/default/lxc-net
if grep -qF "# BEGIN ${LAB_SLUG}-lab" "$DEFAULT" 2>/dev/null; then
  if [ -f /run/lxc/network_up ] || ip link show "$LXC_BRIDGE" >/dev/null 2>&1; then
    log "lxc-net stop"
    /usr/libexec/lxc/lxc-net stop force >/dev/null 2>&1 || true
  fi
  sed -i "/^# BEGIN ${LAB_SLUG}-lab/,/^# END ${LAB_SLUG}-lab/d" "$DEFAULT"
fi

# 3. bridges, guard, sysctl
ip link show "$LAB_BRIDGE" >/dev/null 2>&1 && { ip link del "$LAB_BRIDGE"; log "bridge $LAB_BRIDGE deleted"; }
if [ -z "$mol_left" ] && [ -n "$MOL_BRIDGE" ] && ip link show "$MOL_BRIDGE" >/dev/null 2>&1; then
  ip link del "$MOL_BRIDGE"; log "bridge $MOL_BRIDGE deleted"
fi
[ -n "$mol_left" ] || "$LAB_ROOT/scripts/lab/guard.sh" remove
if [ -z "$mol_left" ] && [ -f "$LAB_STATE/ip_forward.orig" ]; then
  cat "$LAB_STATE/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward
fi

# 4. files
rm -rf "$LAB_ETC"
[ -n "$mol_left" ] || rm -rf "$LAB_STATE"
if [ -z "$mol_left" ]; then
  rm -f /etc/containers/containers.conf.d/50-${LAB_SLUG}-lab.conf
  rmdir /etc/containers/containers.conf.d 2>/dev/null || true
fi
rm -f /etc/apt/sources.list.d/${LAB_SLUG}-lab-bookworm.sources /etc/apt/preferences.d/${LAB_SLUG}-lab-bookworm

if [ $purge -eq 1 ]; then
  vagrant box remove --force "$BOX_NAME" >/dev/null 2>&1 || true
  [ -z "$mol_left" ] && for i in $(podman images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep "^$IMAGE_NAME:" || true); do podman rmi -f "$i" >/dev/null 2>&1 || true; done
  rm -rf "$LAB_CACHE"
  log "purged box, image and cache"
fi
log "host torn down"
