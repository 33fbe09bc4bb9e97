"""Prepare this Debian 12 or 13 machine for the lab and molecule, and undo it.

The order matters: the network guard goes up before LXC's network, so no lab
address is ever routed out of the machine.
  1. Debian packages (on Debian 13, vagrant-lxc from the bookworm suite of the
     same mirror, pinned so that nothing else comes from bookworm)
  2. podman settings: runc, ulimits (a containers.conf.d drop-in)
  3. the podman network of molecule's containers
  4. the network guard and the lab bridge with its host address
  5. lxc-net (lxcbr0, NAT) with a dnsmasq that answers only the mirror's names
Both directions are idempotent. The teardown keeps what neither runs nor
configures anything (packages, the image cache, .venv-ansible); `--purge`
drops the box, the images and the cache too.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

from . import config, guard
from .running import lab_hosts, lab_hosts_running, molecule_containers
from .sh import apt_install, die, installed, log, need_root, output, run, succeeds, tools_env

# lxc-templates: the box's lxc-config includes its debian.common.conf, which is
# only a Recommends of lxc (so --no-install-recommends would leave it out).
PACKAGES = [
    "vagrant",
    "lxc",
    "lxc-templates",
    "debootstrap",
    "debian-archive-keyring",
    "podman",
    "runc",
    "nftables",
    "dnsmasq-base",
    "iproute2",
    "sudo",
    "rsync",
    "python3-venv",
    "ca-certificates",
    "curl",
    "socat",  # molecule's ssh reaches each container through it (.config/molecule)
]
BOOKWORM_SOURCES = Path(f"/etc/apt/sources.list.d/{config.SLUG}-lab-bookworm.sources")
BOOKWORM_PIN = Path(f"/etc/apt/preferences.d/{config.SLUG}-lab-bookworm")
LXC_DEFAULT = Path("/etc/default/lxc-net")
LXC_MARK = f"# BEGIN {config.SLUG}-lab"
LXC_BEGIN = f"{LXC_MARK} (scripts.lab prepare; removed by its teardown)"
LXC_END = f"# END {config.SLUG}-lab"
DNSMASQ_CONF = config.ETC / "dnsmasq.conf"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
PODMAN_CONF = """# Added by queuesvc's lab preparation (removed by its teardown).
# runc: crun rejects hybrid cgroup layouts; ulimits: root here cannot raise
# limits past these, and podman's defaults ask for more.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""


def debian_release() -> str:
    """12 or 13 (another release is treated as 13, best effort)."""
    text = Path("/etc/os-release").read_text()
    match = re.search(r'^VERSION_ID="?(\d+)', text, re.M)
    return match.group(1) if match and match.group(1) in ("12", "13") else "13"


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def _host_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        match = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.M)
        if match:
            return match.group(1)
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        match = re.search(r"^deb\s+(\S*debian\S*)", listing.read_text(), re.M)
        if match:
            return match.group(1)
    return config.MIRROR_URL


def _packages(release: str) -> None:
    apt_install(PACKAGES)
    if release == "12":
        apt_install(["vagrant-lxc"])
    elif not installed("vagrant-lxc"):
        # Debian 13 has no vagrant-lxc: bookworm's (Ruby, arch all) works with
        # trixie's vagrant. Pinned low, that source can upgrade nothing else.
        mirror = _host_mirror()
        log(f"Debian 13: vagrant-lxc from bookworm at {mirror}")
        BOOKWORM_SOURCES.write_text(
            "# Added by queuesvc's lab preparation (removed by its teardown)\n"
            f"Types: deb\nURIs: {mirror}\nSuites: bookworm\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        BOOKWORM_PIN.write_text(
            "# Added by queuesvc's lab preparation: only vagrant-lxc from bookworm\n"
            "Package: *\nPin: release n=bookworm\nPin-Priority: 1\n\n"
            "Package: vagrant-lxc\nPin: release n=bookworm\nPin-Priority: 500\n"
        )
        apt_install(["vagrant-lxc"])
    if "vagrant-lxc" not in output(["vagrant", "plugin", "list"], check=False):
        die("vagrant-lxc plugin not visible to vagrant")


def _lxc_net() -> str:
    path = Path("/usr/libexec/lxc/lxc-net")
    if path.exists():
        return str(path)
    found = [p for p in output(["dpkg", "-L", "lxc"]).splitlines() if p.endswith("/lxc-net")]
    return found[0] if found else die("lxc-net not found")


def _lxc_dnsmasq_running() -> bool:
    pid_file = Path("/run/lxc/dnsmasq.pid")
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return Path(f"/proc/{pid}/comm").exists() and "dnsmasq" in Path(f"/proc/{pid}/comm").read_text()


def _lxc_network(changed: bool) -> None:
    """lxc-net with a dnsmasq that knows only the mirror's names (no upstream DNS)."""
    lines = [
        "# lxc-net's dnsmasq for the queuesvc lab: the mirror's names only, no upstream.",
        "no-resolv",
        "no-hosts",
        "domain-needed",
        "bogus-priv",
        *(f"address=/{config.MIRROR_HOST}/{a}" for a in guard.mirror_addrs()),
    ]
    changed |= _write_if_changed(DNSMASQ_CONF, "\n".join(lines) + "\n")
    default = LXC_DEFAULT.read_text() if LXC_DEFAULT.exists() else ""
    if LXC_MARK not in default:
        block = f'{LXC_BEGIN}\nUSE_LXC_BRIDGE="true"\nLXC_DHCP_CONFILE={DNSMASQ_CONF}\n{LXC_END}\n'
        LXC_DEFAULT.write_text(default + block)
        changed = True
    up = Path("/run/lxc/network_up")
    if up.exists() and not _lxc_dnsmasq_running():
        # A /run kept from another boot (a copied machine) says "up" with no dnsmasq.
        log("lxc-net restart (its dnsmasq is not running)")
        subprocess.run([_lxc_net(), "stop", "force"], capture_output=True, check=False)
    elif up.exists() and changed and not lab_hosts_running():
        log("lxc-net restart (dnsmasq settings changed)")
        subprocess.run([_lxc_net(), "stop", "force"], capture_output=True, check=False)
    if not up.exists():
        log("lxc-net start")
        run([_lxc_net(), "start"])


def prepare() -> None:
    need_root()
    release = debian_release()
    log(f"preparing host (Debian {release})")
    config.STATE.mkdir(parents=True, exist_ok=True)
    config.ETC.mkdir(parents=True, exist_ok=True)
    _packages(release)
    if _write_if_changed(config.PODMAN_CONF, PODMAN_CONF):
        log(f"wrote {config.PODMAN_CONF}")
    if not succeeds(["podman", "network", "exists", config.MOL_NETWORK]):
        log(f"podman network create {config.MOL_NETWORK}")
        # No bridge exists until a container starts; the guard names it then.
        # --disable-dns: no DNS forwarder here (the mirror comes from /etc/hosts).
        run(
            [
                "podman",
                "network",
                "create",
                "--subnet",
                config.MOL_SUBNET,
                "--gateway",
                config.MOL_HOST_ADDR.split("/")[0],
                "--disable-dns",
                config.MOL_NETWORK,
            ],
            quiet=True,
        )
    saved = config.STATE / "ip_forward.orig"
    if not saved.exists():
        saved.write_text(IP_FORWARD.read_text())
    guard.apply()
    _lxc_network(changed=False)
    if not guard.check():
        die("the network guard is incomplete")
    log("host ready")


def teardown(purge: bool = False) -> None:
    """Destroy the lab hosts and undo prepare(). Molecule containers that are
    still on the molecule network belong to another checkout's run: while they
    exist the podman network, the podman settings and the guard stay."""
    need_root()
    if (config.ROOT / ".vagrant/machines").is_dir() and shutil.which("vagrant"):
        log("vagrant destroy -f")
        done = subprocess.run(
            ["vagrant", "destroy", "-f"],
            cwd=config.ROOT,
            env={**tools_env()},
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            log("vagrant destroy reported an error (continuing)")
    for host in lab_hosts():
        log(f"lxc-destroy leftover {host}")
        subprocess.run(["lxc-stop", "-k", "-n", host], capture_output=True, check=False)
        subprocess.run(["lxc-destroy", "-n", host], capture_output=True, check=False)
    foreign = molecule_containers()
    mol_bridge = guard.molecule_bridge()
    if foreign:
        log(
            f"molecule containers on {config.MOL_NETWORK} remain ({' '.join(foreign)}): keeping "
            "the podman network, podman settings and the guard; remove them and tear down again"
        )
    elif succeeds(["podman", "network", "exists", config.MOL_NETWORK]):
        run(["podman", "network", "rm", config.MOL_NETWORK], quiet=True)
        log(f"podman network rm {config.MOL_NETWORK}")

    default = LXC_DEFAULT.read_text() if LXC_DEFAULT.exists() else ""
    if LXC_MARK in default:
        if Path("/run/lxc/network_up").exists() or succeeds(
            ["ip", "link", "show", config.LXC_BRIDGE]
        ):
            log("lxc-net stop")
            subprocess.run([_lxc_net(), "stop", "force"], capture_output=True, check=False)
        kept = re.sub(
            rf"^# BEGIN {config.SLUG}-lab.*?^# END {config.SLUG}-lab\n",
            "",
            default,
            flags=re.M | re.S,
        )
        LXC_DEFAULT.write_text(kept)

    if succeeds(["ip", "link", "show", config.LAB_BRIDGE]):
        run(["ip", "link", "del", config.LAB_BRIDGE])
        log(f"bridge {config.LAB_BRIDGE} deleted")
    if not foreign:
        if mol_bridge and succeeds(["ip", "link", "show", mol_bridge]):
            run(["ip", "link", "del", mol_bridge])
            log(f"bridge {mol_bridge} deleted")
        guard.remove()
        saved = config.STATE / "ip_forward.orig"
        if saved.exists():
            IP_FORWARD.write_text(saved.read_text())
        shutil.rmtree(config.STATE, ignore_errors=True)
        config.PODMAN_CONF.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # other drop-ins may live there
            config.PODMAN_CONF.parent.rmdir()
    shutil.rmtree(config.ETC, ignore_errors=True)
    BOOKWORM_SOURCES.unlink(missing_ok=True)
    BOOKWORM_PIN.unlink(missing_ok=True)
    if purge:
        subprocess.run(
            ["vagrant", "box", "remove", "--force", config.BOX_NAME],
            capture_output=True,
            check=False,
        )
        if not foreign:
            for release in ("13", "12"):
                subprocess.run(
                    ["podman", "rmi", "-f", f"{config.IMAGE}{release}:latest"],
                    capture_output=True,
                    check=False,
                )
        shutil.rmtree(config.CACHE, ignore_errors=True)
        log("purged box, images and cache")
    log("host torn down")


def leftovers(own_molecule_names: list[str]) -> list[str]:
    """What is left of the lab after teardown (empty: nothing). Molecule
    containers of another checkout may remain (never in CI); then the podman
    network, its settings and the guard stay for them."""
    left = []
    if lab_hosts():
        left.append("lxc containers")
    for link in (config.LAB_BRIDGE, config.LXC_BRIDGE):
        if succeeds(["ip", "link", "show", link]):
            left.append(link)
    if Path("/run/lxc/network_up").exists():
        left.append("lxc-net")
    if LXC_DEFAULT.exists() and f"{config.SLUG}-lab" in LXC_DEFAULT.read_text():
        left.append(f"{LXC_DEFAULT} block")
    if config.ETC.exists():
        left.append(str(config.ETC))
    foreign = molecule_containers()
    left += [f"this run's molecule container {c}" for c in foreign if c in own_molecule_names]
    if foreign:
        log(
            f"note: molecule containers of another checkout still run ({' '.join(foreign)}); "
            "podman network, podman settings and guard kept for them"
        )
    else:
        if succeeds(["nft", "list", "table", "inet", config.GUARD_TABLE]):
            left.append("nft guard")
        if succeeds(["podman", "network", "exists", config.MOL_NETWORK]):
            left.append("podman network")
        if config.PODMAN_CONF.exists():
            left.append(str(config.PODMAN_CONF))
    return left
