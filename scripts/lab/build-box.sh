#!/usr/bin/env bash
# Build the lab's images once, from Debian packages (debootstrap):
#   Debian 13 (trixie):   the Vagrant box "queuesvc/debian13" (vagrant-lxc) and
#                         the podman image "localhost/queuesvc-debian13:latest"
#   Debian 12 (bookworm): the podman image "localhost/queuesvc-debian12:latest"
#                         (molecule's second target)
# Box and image of a release come from the same rootfs. Output is cached under
# /var/cache/queuesvc-lab/<suite>-<hash>, keyed by a hash of every input (this
# script, lib.sh, scripts/lab/box/*, suite, mirror); with unchanged inputs a
# run only re-registers what is missing (box, image) and takes a second or two.
#
# Usage: scripts/lab/build-box.sh [--force]
#   QUEUESVC_LAB_CACHE   cache directory (default /var/cache/queuesvc-lab)
#   QUEUESVC_BOX_SUITES  releases to build (default "trixie bookworm")
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root

BOX_DIR=$LAB_ROOT/scripts/lab/box
SUITES=${QUEUESVC_BOX_SUITES:-trixie bookworm}
# Packages the image starts with: what vagrant, sshd and Ansible need, nothing
# a role installs (so molecule still exercises the roles' own installs).
INCLUDE=systemd-sysv,systemd-resolved,dbus,openssh-server,sudo,python3,python3-apt,iproute2,ca-certificates,debian-archive-keyring

force=0
[ "${1:-}" = "--force" ] && force=1

suite_version() { case "$1" in bookworm) echo 12 ;; trixie) echo 13 ;; *) die "unknown suite $1" ;; esac; }

inputs_hash() {  # suite
  {
    cat "$0" "$LAB_ROOT/scripts/lab/lib.sh"
    (cd "$BOX_DIR" && for f in $(ls | sort); do echo "== $f"; cat "$f"; done)
    echo "$1 $MIRROR_URL $INCLUDE $(dpkg --print-architecture)"
  } | sha256sum | cut -c1-16
}

build_rootfs() {  # suite root log
  local suite=$1 root=$2 logf=$3
  log "debootstrap $suite into $root (cold build)"
  apt_install debootstrap debian-archive-keyring
  mkdir -p "$LAB_CACHE/debs"   # downloaded .debs, reused by the next cold build
  debootstrap --variant=minbase --include="$INCLUDE" --components=main \
    --cache-dir="$LAB_CACHE/debs" \
    "$suite" "$root" "$MIRROR_URL" >"$logf" 2>&1 \
    || { tail -n 30 "$logf" >&2; die "debootstrap failed"; }

  sed "s/@SUITE@/$suite/g" "$BOX_DIR/debian.sources" >"$root/etc/apt/sources.list.d/debian.sources"
  chmod 0644 "$root/etc/apt/sources.list.d/debian.sources"
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

pack_box() {  # out box_file
  local out=$1 box=$2 stage=$1/stage
  log "packing the box"
  mkdir -p "$stage"
  # rootfs.tar.gz with paths under ./rootfs/ (what vagrant-lxc expects)
  tar --numeric-owner -C "$out" -czf "$stage/rootfs.tar.gz" ./rootfs
  cp "$BOX_DIR/metadata.json" "$BOX_DIR/lxc-config" "$stage/"
  tar -C "$stage" -cf "$box.tmp" metadata.json rootfs.tar.gz lxc-config
  mv "$box.tmp" "$box"
  rm -rf "$stage"
}

import_image() {  # out image hash
  local out=$1 image=$2 hash=$3 i
  command -v podman >/dev/null 2>&1 || return 0
  if ! podman image exists "$image:$hash"; then
    log "podman import $image:$hash"
    tar --numeric-owner -C "$out/rootfs" -cf - . | podman import --quiet \
      --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL=SIGRTMIN+3' \
      - "$image:$hash" >/dev/null
  fi
  podman tag "$image:$hash" "$image:latest"
  # Older builds go (an image a container still uses stays).
  for i in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep "^$image:" || true); do
    case "$i" in "$image:$hash"|"$image:latest") ;; *) podman rmi "$i" >/dev/null 2>&1 || true ;; esac
  done
}

mkdir -p "$LAB_CACHE"
exec 9>"$LAB_CACHE/.lock"
flock 9
keep=(debs)
for suite in $SUITES; do
  t0=$(date +%s)
  ver=$(suite_version "$suite")
  hash=$(inputs_hash "$suite")
  out=$LAB_CACHE/$suite-$hash
  keep+=("$suite-$hash")
  with_box=0; [ "$suite" = trixie ] && with_box=1
  box=$out/${LAB_SLUG}-debian$ver.box
  if [ $force -eq 1 ] || [ ! -f "$out/ok" ]; then
    rm -rf "$out"; mkdir -p "$out"
    build_rootfs "$suite" "$out/rootfs" "$out/debootstrap.log"
    [ $with_box -eq 0 ] || pack_box "$out" "$box"
    echo $(( $(date +%s) - t0 )) >"$out/cold-seconds"
    echo "$hash" >"$out/ok"
    state=cold
  else
    state=cached
  fi
  # Register the box with vagrant when it is missing or from other inputs.
  if [ $with_box -eq 1 ] && command -v vagrant >/dev/null 2>&1; then
    if ! vagrant box list 2>/dev/null | grep "^$BOX_NAME " >/dev/null \
       || [ "$(cat "$LAB_CACHE/box-registered" 2>/dev/null)" != "$hash" ]; then
      log "vagrant box add $BOX_NAME"
      vagrant box add --force --name "$BOX_NAME" "$box" >/dev/null
      echo "$hash" >"$LAB_CACHE/box-registered"
    fi
  fi
  import_image "$out" "localhost/${LAB_SLUG}-debian$ver" "$hash"
  dt=$(( $(date +%s) - t0 ))
  log "debian$ver $state ($hash) in ${dt}s"
  echo "box_build_debian${ver}_${state}_seconds=$dt"
done

# Cache entries of other inputs are dropped so the cache does not grow.
for d in "$LAB_CACHE"/*/; do
  [ -d "$d" ] || continue
  n=$(basename "$d")
  [[ " ${keep[*]} " == *" $n "* ]] || rm -rf "$d"
done
