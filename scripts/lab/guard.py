"""The lab's network guard: the nftables table `inet queuesvc_guard`.

No packet for a lab address may leave by the default route:
- forwarded traffic from a lab bridge is dropped, except to the package
  mirror's addresses on tcp 80/443 (and traffic that stays on its bridge);
- any packet to a lab subnet that would leave through a non-lab interface is
  dropped, whether forwarded or sent by the host itself;
- the host accepts from the lab bridges only DNS/DHCP (lxcbr0) and replies.
The guard goes up before any lab bridge has an address, and its removal is
refused while a lab host runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from . import config
from .running import lab_hosts_running, molecule_containers
from .sh import apt_install, die, log, need_root, output, run, succeeds, which


def mirror_addrs() -> list[str]:
    """IPv4 addresses of the package mirror, resolved on the controller."""
    try:
        infos = socket.getaddrinfo(config.MIRROR_HOST, None, socket.AF_INET)
    except socket.gaierror:
        die(f"cannot resolve {config.MIRROR_HOST} on the controller")
    return sorted({str(info[4][0]) for info in infos})


def molecule_bridge() -> str:
    """The molecule network's bridge (podman names it); "" while it does not exist."""
    if not which("podman"):
        return ""
    return output(
        ["podman", "network", "inspect", config.MOL_NETWORK, "--format", "{{.NetworkInterface}}"],
        check=False,
    )


def bridges() -> dict[str, str]:
    """Each lab bridge with the host address it must carry."""
    found = {config.LAB_BRIDGE: config.LAB_HOST_ADDR, config.LXC_BRIDGE: config.LXC_HOST_ADDR}
    mol = molecule_bridge()
    if mol:
        found[mol] = config.MOL_HOST_ADDR
    return found


def ruleset() -> str:
    ifaces = ", ".join(f'"{b}"' for b in bridges())
    same = "".join(
        f'    iifname "{b}" oifname "{b}" accept comment "stays on its bridge"\n' for b in bridges()
    )
    table = config.GUARD_TABLE
    return f"""table inet {table} {{}}
delete table inet {table}
table inet {table} {{
  set lab_ifaces {{ type ifname; elements = {{ {ifaces} }} }}
  set lab_nets {{ type ipv4_addr; flags interval; elements = {{ {", ".join(config.SUBNETS)} }} }}
  set mirror {{ type ipv4_addr; elements = {{ {", ".join(mirror_addrs())} }} }}

  chain forward {{
    type filter hook forward priority -10; policy accept;
{same}    ip daddr @lab_nets oifname != @lab_ifaces counter drop comment "lab subnet via non-lab iface"
    iifname @lab_ifaces ip daddr @mirror tcp dport {{ 80, 443 }} accept comment "package mirror"
    iifname @lab_ifaces counter drop comment "lab egress"
    oifname @lab_ifaces ct state established,related accept
    oifname @lab_ifaces counter drop comment "lab ingress"
  }}
  chain output {{
    type filter hook output priority -10; policy accept;
    ip daddr @lab_nets oifname != @lab_ifaces oifname != "lo" counter drop comment "lab subnet via non-lab iface"
  }}
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname @lab_ifaces ct state established,related accept
    iifname "{config.LXC_BRIDGE}" udp dport {{ 53, 67 }} accept comment "lxc-net dnsmasq"
    iifname "{config.LXC_BRIDGE}" tcp dport 53 accept comment "lxc-net dnsmasq"
    iifname @lab_ifaces meta l4proto {{ icmp, ipv6-icmp }} accept
    iifname @lab_ifaces counter drop comment "lab to host"
  }}
}}
"""  # noqa: E501


def _has_addr(bridge: str, cidr: str) -> bool:
    return f" {cidr} " in output(["ip", "-4", "addr", "show", "dev", bridge], check=False)


def _exists(link: str) -> bool:
    return succeeds(["ip", "link", "show", link])


def apply() -> None:
    need_root()
    if not which("nft"):
        apt_install(["nftables"])
    # Rules first, then the addresses: nothing can race out by the default route.
    run(["nft", "-f", "-"], stdin=ruleset())
    if not _exists(config.LAB_BRIDGE):
        run(["ip", "link", "add", config.LAB_BRIDGE, "type", "bridge"])
    if not _has_addr(config.LAB_BRIDGE, config.LAB_HOST_ADDR):
        run(["ip", "addr", "add", config.LAB_HOST_ADDR, "dev", config.LAB_BRIDGE])
    run(["ip", "link", "set", config.LAB_BRIDGE, "up"])
    # lxcbr0 is made by lxc-net and the podman bridge by podman: where they
    # exist they must carry their host address too (problems() checks it).
    log(f"network guard applied (table inet {config.GUARD_TABLE})")


def problems(table: str | None = None) -> list[str]:
    """What keeps the guard from being complete; empty when it is.

    QUEUESVC_GUARD_TABLE names another table: CI points it at one that does
    not exist to prove that `vagrant up` refuses to start a host unguarded,
    without dropping the real guard."""
    table = table or os.environ.get("QUEUESVC_GUARD_TABLE", config.GUARD_TABLE)
    have = output(["nft", "list", "table", "inet", table], check=False)
    if not have:
        return [f"table inet {table} missing"]
    found = [
        f"rule missing: {pattern}"
        for pattern in (
            "hook forward",
            "hook output",
            "hook input",
            'comment "lab egress"',
            'comment "lab subnet via non-lab iface"',
            'comment "package mirror"',
        )
        if pattern not in have
    ]
    found += [f"mirror address {a} not in the allow set" for a in mirror_addrs() if a not in have]
    found += [
        f"bridge {b} lacks host address {cidr}"
        for b, cidr in bridges().items()
        if _exists(b) and not _has_addr(b, cidr)
    ]
    if not _exists(config.LAB_BRIDGE):
        found.append(f"lab bridge {config.LAB_BRIDGE} missing")
    return found


def check() -> bool:
    found = problems()
    for problem in found:
        print(f"guard: {problem}", file=sys.stderr)
    if not found:
        print(f"guard: ok (table inet {config.GUARD_TABLE}, bridges addressed)")
    return not found


def remove() -> None:
    need_root()
    if running := lab_hosts_running():
        die(f"lab hosts still running; refusing to drop the guard: {' '.join(running)}")
    if containers := molecule_containers():
        die(
            f"molecule containers on {config.MOL_NETWORK}; refusing to drop the guard: "
            f"{' '.join(containers)}"
        )
    if which("nft"):
        subprocess.run(
            ["nft", "delete", "table", "inet", config.GUARD_TABLE],
            stderr=subprocess.DEVNULL,
            check=False,
        )
    log("network guard removed")
