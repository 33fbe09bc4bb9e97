"""Names and addresses of the lab on this machine: one place for each.

Every name the lab creates on the host starts with the project slug, so the
teardown finds exactly what the preparation added and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

SLUG = "queuesvc"
ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("QUEUESVC_LAB_CACHE", f"/var/cache/{SLUG}-lab"))
STATE = Path(f"/run/{SLUG}-lab")  # runtime state, gone at reboot
ETC = Path(f"/etc/{SLUG}-lab")  # configuration files the preparation writes
LOGS = Path(f"/tmp/{SLUG}-lab-logs")  # noqa: S108 - root-only logs of long steps

# The lab's private network (VirtualBox's host-only range, so laptops match).
LAB_BRIDGE = f"{SLUG}0"
LAB_SUBNET = "192.168.56.0/24"
LAB_HOST_ADDR = "192.168.56.1/24"
LB_URL = os.environ.get("LAB_LB_URL", "https://192.168.56.10")
# The lab's generated secrets (inventories/vagrant/group_vars/all.yml), its
# API keys among them: qsk_<id>_<secret>, from two files each.
LAB_SECRETS = ROOT / ".vagrant/queuesvc-secrets"
LAB_KEY_NAMES = ("demo", "admin")


def lab_api_key(name: str) -> str:
    """The lab's API key `name` (demo: a tenant's every scope but admin; admin)."""
    parts = [LAB_SECRETS / f"api_key_{name}_{part}" for part in ("id", "secret")]
    missing = [str(path) for path in parts if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no lab API key {name!r} yet ({', '.join(missing)}): bring the lab up"
        )
    key_id, secret = (path.read_text().split()[0] for path in parts)
    return f"qsk_{key_id}_{secret}"


# LXC's own NAT bridge (lxc-net defaults): the lab hosts' eth0, DHCP and DNS.
LXC_BRIDGE = "lxcbr0"
LXC_SUBNET = "10.0.3.0/24"
LXC_HOST_ADDR = "10.0.3.1/24"
# The podman network of the molecule containers.
MOL_NETWORK = f"{SLUG}-molecule"
MOL_SUBNET = "10.89.56.0/24"
MOL_HOST_ADDR = "10.89.56.1/24"
# Molecule logs in as the images' vagrant user with Vagrant's well-known key;
# vagrant writes this copy (mode 0600) at its first run (prepare runs it).
MOL_SSH_KEY = Path.home() / ".vagrant.d/insecure_private_key"
SUBNETS = (LAB_SUBNET, LXC_SUBNET, MOL_SUBNET)

GUARD_TABLE = f"{SLUG}_guard"  # nft table inet queuesvc_guard
MIRROR_HOST = "deb.debian.org"
MIRROR_URL = f"http://{MIRROR_HOST}/debian"
BOX_NAME = f"{SLUG}/debian13"
IMAGE = f"localhost/{SLUG}-debian"  # + "13" or "12"
PODMAN_CONF = Path(f"/etc/containers/containers.conf.d/50-{SLUG}-lab.conf")

VENV = ROOT / ".venv"  # the service and its dev tools
TOOLS_VENV = ROOT / ".venv-ansible"  # ansible, molecule, linters
MONGOECO_VENV = ROOT / ".venv-mongoeco"  # the MongoDB emulator (Python 3.13)
DEV_STATE = Path(os.environ.get("QUEUESVC_DEV_STATE", f"/var/lib/{SLUG}-dev"))
DEV_ENV = Path(os.environ.get("QUEUESVC_DEV_ENV", str(DEV_STATE / "test.env")))
MONGOECO_SERVER = ROOT / "roles/mongodb/files/mongoeco_server.py"
MONGOECO_REQUIREMENT = "mongoeco[wire]==4.11.0"
