"""Launch the mongoeco wire-protocol server: a MongoDB *emulator*, not MongoDB.

No `mongod` can be installed on the machines this project is tested on, so the
test fixtures (and the lab's offline MongoDB engine) run this stand-in, which
speaks the MongoDB wire protocol to PyMongo. It needs Python >= 3.13 and
`mongoeco[wire]==4.11.0`.

Users come from a JSON file (a list of {"username", "password", "source"}):
the emulator has no `createUser`, so users exist only from start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from mongoeco.engines import MemoryEngine, SQLiteEngine
from mongoeco.wire import AsyncMongoEcoProxyServer
from mongoeco.wire.auth import WireAuthUser


def load_users(path: Path) -> tuple[WireAuthUser, ...]:
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list) or not entries:
        raise SystemExit(f"{path}: expected a non-empty JSON list of users")
    users = []
    for entry in entries:
        if not entry.get("username") or not entry.get("password"):
            raise SystemExit(f"{path}: every user needs a username and a password")
        users.append(
            WireAuthUser(
                username=entry["username"],
                password=entry["password"],
                source=entry.get("source", "admin"),
                mechanisms=("SCRAM-SHA-256",),
            )
        )
    return tuple(users)


async def serve(args: argparse.Namespace) -> None:
    engine = SQLiteEngine(str(args.path)) if args.engine == "sqlite" else MemoryEngine()
    users = load_users(args.users_file) if args.users_file else ()
    if not users and not args.allow_no_auth:
        raise SystemExit("refusing to start without users (pass --users-file)")
    server = AsyncMongoEcoProxyServer(
        engine=engine, host=args.host, port=args.port, auth_users=users
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    address = await server.start()
    print(
        f"mongoeco listening on {address.host}:{address.port} "
        f"engine={args.engine} users={len(users)}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017)
    parser.add_argument("--engine", choices=("memory", "sqlite"), default="sqlite")
    parser.add_argument(
        "--path",
        type=Path,
        default=Path("mongoeco.sqlite3"),
        help="database file for the sqlite engine",
    )
    parser.add_argument("--users-file", type=Path)
    parser.add_argument(
        "--allow-no-auth",
        action="store_true",
        help="start without authentication (never in production)",
    )
    args = parser.parse_args()
    if sys.version_info < (3, 13):
        raise SystemExit("mongoeco needs Python >= 3.13")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
