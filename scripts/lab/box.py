"""The lab's images, built once from Debian packages with debootstrap:
  Debian 13: the Vagrant box queuesvc/debian13 (vagrant-lxc) and the podman
             image localhost/queuesvc-debian13 (molecule), from one rootfs;
  Debian 12: the podman image localhost/queuesvc-debian12 (molecule's second target).
Each build is cached under CACHE/<suite>-<hash>, keyed by a hash of every
input; with unchanged inputs a run only registers what is missing.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from . import config
from .sh import apt_install, die, log, need_root, output, run, run_logged, succeeds, which

BOX_FILES = Path(__file__).resolve().parent / "box"
SUITES = {"trixie": "13", "bookworm": "12"}
# What vagrant, sshd and Ansible need, nothing a role installs (so molecule
# still exercises the roles' own installs).
INCLUDE = (
    "systemd-sysv,systemd-resolved,dbus,openssh-server,sudo,python3,python3-apt,iproute2,"
    "ca-certificates,debian-archive-keyring"
)


def inputs_hash(suite: str) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(BOX_FILES.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    arch = output(["dpkg", "--print-architecture"])
    digest.update(f"{suite} {config.MIRROR_URL} {INCLUDE} {arch}".encode())
    return digest.hexdigest()[:16]


def _chroot(root: Path, *cmd: str) -> None:
    run(["chroot", root, *cmd], quiet=True)


def build_rootfs(suite: str, root: Path) -> None:
    log(f"debootstrap {suite} into {root} (cold build)")
    apt_install(["debootstrap", "debian-archive-keyring"])
    debs = config.CACHE / "debs"  # downloaded .debs, reused by the next cold build
    debs.mkdir(parents=True, exist_ok=True)
    run_logged(
        f"debootstrap-{suite}",
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={INCLUDE}",
            "--components=main",
            f"--cache-dir={debs}",
            suite,
            root,
            config.MIRROR_URL,
        ],
        tail=30,
    )

    sources = (BOX_FILES / "debian.sources").read_text().replace("@SUITE@", suite)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(sources)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    shutil.copy(BOX_FILES / "eth0.network", root / "etc/systemd/network/10-eth0.network")
    shutil.copy(BOX_FILES / "ssh-hostkeys.service", root / "etc/systemd/system/")
    for unit in ("systemd-networkd.service", "systemd-networkd.socket", "systemd-resolved.service"):
        dropin = root / f"etc/systemd/system/{unit}.d"
        dropin.mkdir(parents=True, exist_ok=True)
        shutil.copy(BOX_FILES / "lxc-only.conf", dropin / "lxc-only.conf")

    # The vagrant user: passwordless sudo and Vagrant's well-known key (replaced
    # by a key per host at the first `vagrant up`); no root login by password.
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "vagrant")
    _chroot(root, "passwd", "--lock", "root")
    sudoers = root / "etc/sudoers.d/vagrant"
    sudoers.write_text("vagrant ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    keys = glob.glob("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub")
    if not keys:
        die("vagrant's public key not found (is the vagrant package installed?)")
    ssh = root / "home/vagrant/.ssh"
    ssh.mkdir(mode=0o700)
    shutil.copy(keys[0], ssh / "authorized_keys")
    (ssh / "authorized_keys").chmod(0o600)
    _chroot(root, "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh")

    # An identity per host at first boot: ssh host keys, machine-id.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/hostname").write_text("localhost\n")
    systemctl = ["systemctl", f"--root={root}"]
    run(
        [
            *systemctl,
            "enable",
            "ssh-hostkeys.service",
            "systemd-networkd.service",
            "systemd-resolved.service",
        ],
        quiet=True,
    )
    # No background apt in the lab; no boot-time wait for every link.
    run(
        [
            *systemctl,
            "mask",
            "apt-daily.timer",
            "apt-daily-upgrade.timer",
            "systemd-networkd-wait-online.service",
        ],
        quiet=True,
    )

    # An empty apt cache, dated 1970 so that `cache_valid_time` refreshes it.
    _chroot(root, "apt-get", "clean")
    lists = root / "var/lib/apt/lists"
    shutil.rmtree(lists)
    lists.mkdir()
    run(["touch", "-d", "@0", lists])
    for pattern in ("var/log/*.log", "var/cache/debconf/*-old", "tmp/*"):
        for path in root.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def pack_box(out: Path, box: Path) -> None:
    """rootfs.tar.gz with its paths under ./rootfs/ (what vagrant-lxc expects)."""
    log("packing the box")
    stage = out / "stage"
    stage.mkdir()
    run(["tar", "--numeric-owner", "-C", out, "-czf", stage / "rootfs.tar.gz", "./rootfs"])
    for name in ("metadata.json", "lxc-config"):
        shutil.copy(BOX_FILES / name, stage)
    tmp = box.with_suffix(".tmp")
    run(["tar", "-C", stage, "-cf", tmp, "metadata.json", "rootfs.tar.gz", "lxc-config"])
    tmp.rename(box)
    shutil.rmtree(stage)


def import_image(out: Path, image: str, digest: str) -> None:
    if not which("podman"):
        return
    if not succeeds(["podman", "image", "exists", f"{image}:{digest}"]):
        log(f"podman import {image}:{digest}")
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(out / "rootfs"), "-cf", "-", "."],
            stdout=subprocess.PIPE,
        )
        done = subprocess.run(
            [
                "podman",
                "import",
                "--quiet",
                "--change",
                'CMD ["/sbin/init"]',
                "--change",
                "STOPSIGNAL=SIGRTMIN+3",
                "-",
                f"{image}:{digest}",
            ],
            stdin=tar.stdout,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        if tar.wait() != 0 or done.returncode != 0:
            die(f"podman import {image} failed")
    run(["podman", "tag", f"{image}:{digest}", f"{image}:latest"])
    # Older builds go (one that a container still uses stays).
    tags = output(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"]).split()
    for tag in tags:
        if tag.startswith(f"{image}:") and tag not in (f"{image}:{digest}", f"{image}:latest"):
            subprocess.run(["podman", "rmi", tag], capture_output=True, check=False)


def build(force: bool = False) -> list[str]:
    """Build or reuse every image; returns one line per release for the CI summary."""
    need_root()
    config.CACHE.mkdir(parents=True, exist_ok=True)
    lines = []
    with (config.CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keep = {"debs", ".lock", "box-registered"}
        for suite, version in SUITES.items():
            started = time.monotonic()
            digest = inputs_hash(suite)
            out = config.CACHE / f"{suite}-{digest}"
            keep.add(out.name)
            box = out / f"{config.SLUG}-debian{version}.box"
            with_box = suite == "trixie"
            state = "cached"
            if force or not (out / "ok").exists():
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                build_rootfs(suite, out / "rootfs")
                if with_box:
                    pack_box(out, box)
                (out / "cold-seconds").write_text(str(round(time.monotonic() - started)))
                (out / "ok").write_text(digest)
                state = "cold"
            registered = config.CACHE / "box-registered"
            if (
                with_box
                and which("vagrant")
                and (
                    config.BOX_NAME not in output(["vagrant", "box", "list"], check=False)
                    or not registered.exists()
                    or registered.read_text() != digest
                )
            ):
                log(f"vagrant box add {config.BOX_NAME}")
                run(
                    ["vagrant", "box", "add", "--force", "--name", config.BOX_NAME, box], quiet=True
                )
                registered.write_text(digest)
            import_image(out, f"{config.IMAGE}{version}", digest)
            seconds = round(time.monotonic() - started)
            cold = (out / "cold-seconds").read_text()
            log(f"debian{version} {state} ({digest}) in {seconds}s")
            lines.append(f"debian{version} {state} in {seconds}s (cold build {cold}s)")
        # Cache entries of other inputs go, so that the cache does not grow.
        for entry in config.CACHE.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return lines
