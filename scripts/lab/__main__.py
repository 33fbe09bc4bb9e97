"""python3 -m scripts.lab COMMAND: the lab, CI and the local services.

Run as root from the repository, on Debian 12 or 13. `--help` lists the commands.
"""

from __future__ import annotations

import argparse
import sys

from . import box, ci, config, demo, guard, host, lab, molecule, services, wheelhouse
from .sh import LabError, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m scripts.lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("test", help="the whole test suite, as CI runs it, with a timing table")
    commands.add_parser("demo", help="the seven-host lab up, then the tutorial's requests via lb1")
    commands.add_parser("local", help="the service alone on loopback, then the tutorial's requests")
    commands.add_parser("local-stop", help="stop what `local` started")
    commands.add_parser("services", help="install and start RabbitMQ, Redis, the MongoDB emulator")
    commands.add_parser("prepare", help="prepare this host (network guard first); idempotent")
    commands.add_parser("box", help="build or reuse the box and the podman images").add_argument(
        "--force", action="store_true", help="build again even when cached"
    )
    commands.add_parser("up", help="prepare, box, vagrant up, and the checks of the running lab")
    for name in ("down", "teardown"):
        commands.add_parser(
            name, help="destroy the lab and undo the host preparation"
        ).add_argument(
            "--purge", action="store_true", help="also remove the box, the images and the cache"
        )
    guard_cmd = commands.add_parser("guard", help="the nftables network guard")
    guard_cmd.add_argument("action", choices=["apply", "check", "remove", "print"])
    commands.add_parser(
        "api-key", help="print one of the lab's API keys (made when the lab is provisioned)"
    ).add_argument("name", choices=config.LAB_KEY_NAMES)
    mol = commands.add_parser("molecule", help="molecule COMMAND for the roles' scenarios")
    mol.add_argument("-r", "--role", action="append", default=[], help="a role (repeatable)")
    mol.add_argument("-s", "--scenario", help="only this scenario")
    mol.add_argument("-j", "--jobs", type=int, default=1, help="scenarios at a time")
    mol.add_argument("molecule_command", nargs="?", default="test")
    wheels = commands.add_parser("wheelhouse", help="the app's wheelhouse for the hosts' Python")
    wheels.add_argument("python_version", help="the hosts' Python, e.g. 3.13")
    wheels.add_argument("arch", nargs="?", default="x86_64")
    wheels.add_argument("label", nargs="?", default="", help="appended to the release name")
    args = parser.parse_args(argv)

    try:
        match args.command:
            case "test":
                return ci.main()
            case "demo":
                demo.lab()
            case "local":
                demo.local()
            case "local-stop":
                demo.local_stop()
            case "services":
                services.start()
            case "prepare":
                host.prepare()
            case "box":
                print("\n".join(box.build(args.force)))
            case "up":
                lab.up()
            case "down" | "teardown":
                lab.down(args.purge)
            case "guard":
                if args.action == "check":
                    return 0 if guard.check() else 1
                if args.action == "print":
                    print(guard.ruleset(), end="")
                elif args.action == "apply":
                    guard.apply()
                else:
                    guard.remove()
            case "api-key":
                print(config.lab_api_key(args.name))
            case "wheelhouse":
                wheelhouse.main(args.python_version, args.arch, args.label)
            case "molecule":
                if args.jobs < 1:
                    parser.error("--jobs needs a positive number")
                molecule.run(args.role, args.scenario, args.jobs, args.molecule_command)
    except LabError as error:
        log(f"ERROR: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
