#!/usr/bin/env bash
# Build the lab's Debian 13 (trixie) image once, from Debian packages:
#   - the Vagrant box "queuesvc/debian13" for the vagrant-lxc provider, and
#   - the podman image "localhost/queuesvc-debian13:latest" for molecule,
# both from the same debootstrap rootfs. Output is cached under
# /var/cache/queuesvc-lab/<hash>, keyed by a hash of every input (this script,
# lib.sh, scripts/lab/box/*, suite, mirror); a run with unchanged inputs only
# re-registers what is missing (box, image) and takes a second.
#
# Usage: scripts/lab/build-box.sh [--force]
#   QUEUESVC_LAB_CACHE  cache directory (default /var/cache/queuesvc-lab)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root

SUITE=trixie
BOX_DIR=$LAB_ROOT/scripts/lab/box
# Packages the image starts with: what vagrant, sshd and Ansible need, nothing
# a role installs (so molecule still exercises the roles' own installs).
INCLUDE=systemd-sysv,systemd-resolved,dbus,openssh-server,sudo,python3,python3-apt,iproute2,ca-certificates,debian-archive-keyring

force=0
[ "${1:-}" = "--force" ] && force=1

inputs_hash() {
  {
    cat "$0" "$LAB_ROOT/scripts/lab/lib.sh"
    (cd "$BOX_DIR" && for f in $(ls | sort); do echo "== $f"; cat "$f"; done)
    echo "$SUITE $MIRROR_URL $INCLUDE $(dpkg --print-architecture)"
  } | sha256sum | cut -c1-16
}

HASH=$(inputs_hash)
OUT=$LAB_CACHE/$HASH
BOX_FILE=$OUT/${LAB_SLUG}-debian13.box

build_rootfs() {
  local root=$1
  log "debootstrap $SUITE into $root (cold build)"
  apt_install debootstrap debian-archive-keyring
  mkdir -p "$LAB_CACHE/debs"   # downloaded .debs, reused by the next cold build
  debootstrap --variant=minbase --include="$INCLUDE" --components=main \
    --cache-dir="$LAB_CACHE/debs" \
    "$SUITE" "$root" "$MIRROR_URL" >"$OUT/debootstrap.log" 2>&1 \
    || { tail -n 30 "$OUT/debootstrap.log" >&2; die "debootstrap failed"; }

  install -m 0644 "$BOX_DIR/debian.sources" "$root/etc/apt/sources.list.d/debian.sources"
  rm -f "$root/etc/apt/sources.list"
  install -m 0644 "$BOX_DIR/eth0.network" "$root/etc/systemd/network/10-eth0.network"
  install -m 0644 "$BOX_DIR/ssh-hostkeys.service" "$root/etc/systemd/system/ssh-hostkeys.service"
  local unit
  for unit in systemd-networkd.service systemd-networkd.socket systemd-resolved.service; do
    install -D -m 0644 "$BOX_DIR/lxc-only.conf" "$root/etc/systemd/system/$unit.d/lxc-only.conf"
  done

  # vagrant user: passwordless sudo, Vagrant's well-known key (replaced by a
  # per-host key at first `vagrant up`), root login by password impossible.
  chroot "$root" useradd --create-home --shell /bin/bash vagrant
  chroot "$root" passwd --lock root >/dev/null
  echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/vagrant"
  chmod 0440 "$root/etc/sudoers.d/vagrant"
  local pub
  pub=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n1 || true)
  [ -n "$pub" ] || die "vagrant's public key not found (is the vagrant package installed?)"
  install -d -m 0700 "$root/home/vagrant/.ssh"
  install -m 0600 "$pub" "$root/home/vagrant/.ssh/authorized_keys"
  chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh

  # Per-host identity at first boot: ssh host keys, machine-id.
  rm -f "$root"/etc/ssh/ssh_host_*
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  echo localhost >"$root/etc/hostname"

  systemctl --root="$root" enable ssh-hostkeys.service systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
  # No background apt in the lab; no boot-time wait for every link.
  systemctl --root="$root" mask apt-daily.timer apt-daily-upgrade.timer \
    systemd-networkd-wait-online.service >/dev/null 2>&1

  # Empty apt cache, dated 1970 so `cache_valid_time` refreshes it.
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  touch -d @0 "$root/var/lib/apt/lists"
  rm -rf "$root"/var/log/*.log "$root"/var/cache/debconf/*-old "$root"/tmp/* 
}

build() {
  rm -rf "$OUT"
  mkdir -p "$OUT"
  local root=$OUT/rootfs
  build_rootfs "$root"
  log "packing the box"
  local stage=$OUT/stage
  mkdir -p "$stage"
  # rootfs.tar.gz with paths under ./rootfs/ (what vagrant-lxc expects)
  tar --numeric-owner -C "$OUT" -czf "$stage/rootfs.tar.gz" ./rootfs
  cp "$BOX_DIR/metadata.json" "$BOX_DIR/lxc-config" "$stage/"
  tar -C "$stage" -cf "$BOX_FILE.tmp" metadata.json rootfs.tar.gz lxc-config
  mv "$BOX_FILE.tmp" "$BOX_FILE"
  rm -rf "$stage"
  echo $(( $(date +%s) - t0 )) >"$OUT/cold-seconds"
  echo "$HASH" >"$OUT/ok"
}

# Old cache entries (other hashes) are dropped so the cache does not grow.
prune_cache() {
  local d
  for d in "$LAB_CACHE"/*/; do
    [ -d "$d" ] || continue
    case "$(basename "$d")" in "$HASH"|debs) ;; *) rm -rf "$d" ;; esac
  done
}

t0=$(date +%s)
mkdir -p "$LAB_CACHE"
exec 9>"$LAB_CACHE/.lock"
flock 9
if [ $force -eq 1 ] || [ ! -f "$OUT/ok" ]; then
  build
  state=cold
else
  state=cached
fi
prune_cache

# Register the box with vagrant when it is missing or from other inputs.
if command -v vagrant >/dev/null 2>&1; then
  if ! vagrant box list 2>/dev/null | grep "^$BOX_NAME " >/dev/null \
     || [ "$(cat "$LAB_CACHE/box-registered" 2>/dev/null)" != "$HASH" ]; then
    log "vagrant box add $BOX_NAME"
    vagrant box add --force --name "$BOX_NAME" "$BOX_FILE" >/dev/null
    echo "$HASH" >"$LAB_CACHE/box-registered"
  fi
fi
# Import the podman image (same rootfs) for molecule.
if command -v podman >/dev/null 2>&1 && ! podman image exists "$IMAGE_NAME:$HASH"; then
  log "podman import $IMAGE_NAME:$HASH"
  tar --numeric-owner -C "$OUT/rootfs" -cf - . | podman import --quiet \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL=SIGRTMIN+3' \
    - "$IMAGE_NAME:$HASH" >/dev/null
fi
if command -v podman >/dev/null 2>&1; then
  podman tag "$IMAGE_NAME:$HASH" "$IMAGE_NAME:latest"
  for i in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep "^$IMAGE_NAME:" || true); do
    case "$i" in "$IMAGE_NAME:$HASH"|"$IMAGE_NAME:latest") ;; *) podman rmi "$i" >/dev/null 2>&1 || true ;; esac
  done
fi

log "box $state ($HASH) in $(( $(date +%s) - t0 ))s"
echo "box_build_${state}_seconds=$(( $(date +%s) - t0 ))"
