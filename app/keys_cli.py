"""`python -m app keys ...`: create, list, revoke and seed API keys.

Run where the service's settings are (an app server's environment file): the
command talks to the same MongoDB and Redis as the API. A new key is printed
once and never again; a seeded key (from the vault) is read from standard
input, so it never shows in a process list or a shell history.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from app import db
from app.keys import API_KEYS, REVOKED_CHANNEL, ApiKey, KeyStore, Scope, check_owner, parse_scopes
from app.redis_client import async_client as redis_client_for
from app.settings import get_settings

DURATION_RE = re.compile(r"^(\d+)([dh])$")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m app keys", description=__doc__)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="one JSON object per key")
    commands = top.add_subparsers(dest="command", required=True)

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, parents=[output])

    create = add("create", "make a new key and print it (once)")
    create.add_argument("--owner", required=True, type=_owner, help="the tenant, e.g. acme")
    create.add_argument("--name", default="", help="what the key is for (default: the owner)")
    create.add_argument("--scopes", required=True, type=_scopes, help="e.g. tasks:submit")
    create.add_argument("--expires", type=_expiry, help="30d, 12h, or an ISO 8601 time")
    listing = add("list", "the keys (never their secrets)")
    listing.add_argument("--owner", type=_owner)
    revoke = add("revoke", "revoke a key by its id, at once everywhere")
    revoke.add_argument("key_id")
    seed = add("seed", "make sure the key on standard input exists")
    seed.add_argument("--owner", required=True, type=_owner)
    seed.add_argument("--name", required=True)
    seed.add_argument("--scopes", required=True, type=_scopes)
    return top


def _scopes(text: str) -> frozenset[Scope]:
    try:
        return parse_scopes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _owner(text: str) -> str:
    try:
        return check_owner(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _expiry(text: str) -> datetime:
    now = datetime.now(UTC)
    match = DURATION_RE.match(text)
    if match:
        count, unit = int(match.group(1)), match.group(2)
        return now + (timedelta(days=count) if unit == "d" else timedelta(hours=count))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give 30d, 12h or an ISO 8601 time") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when <= now:
        raise argparse.ArgumentTypeError(f"{text!r} is in the past")
    return when


def _show(key: ApiKey, as_json: bool, secret: str | None = None) -> None:
    record: dict[str, Any] = key.public()
    if secret is not None:
        record["key"] = secret
    if as_json:
        print(json.dumps(record))
        return
    if secret is not None:
        print(f"key: {secret}")
        print("  (shown once: store it now; only its hash is kept)")
    expires = record["expires_at"] or "never"
    state = f"revoked {record['revoked_at']}" if record["revoked_at"] else f"expires {expires}"
    print(f"{record['id']}  owner={record['owner']}  name={record['name']}  ", end="")
    print(f"scopes={','.join(record['scopes'])}  created {record['created_at']}  {state}")


async def _announce_revocation(key_id: str) -> bool:
    client = redis_client_for(get_settings())
    try:
        await client.publish(REVOKED_CHANNEL, key_id)
        return True
    except RedisError:
        return False
    finally:
        await client.aclose()


async def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    mongo = db.async_client(settings)
    store = KeyStore(mongo[settings.mongodb_database][API_KEYS])
    try:
        if args.command == "create":
            key, secret = await store.create(
                owner=args.owner,
                name=args.name or args.owner,
                scopes=args.scopes,
                expires_at=args.expires,
            )
            _show(key, args.json, secret)
        elif args.command == "list":
            for key in await store.list(args.owner):
                _show(key, args.json)
        elif args.command == "revoke":
            revoked = await store.revoke(args.key_id)
            if revoked is None:
                print(f"no key has the id {args.key_id!r}", file=sys.stderr)
                return 1
            if not await _announce_revocation(revoked.id):
                print(
                    "revoked; Redis did not take the announcement, so API processes "
                    f"stop accepting it within {settings.api_key_cache_seconds:g} s",
                    file=sys.stderr,
                )
            _show(revoked, args.json)
        else:
            secret = sys.stdin.readline().strip()
            try:
                key, changed = await store.seed(
                    secret, owner=args.owner, name=args.name, scopes=args.scopes
                )
            except ValueError as exc:
                print(f"cannot seed: {exc}", file=sys.stderr)
                return 2
            if changed and not args.json:
                print("changed")
            _show(key, args.json)
    except PyMongoError as exc:
        print(f"MongoDB: {exc.__class__.__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 3
    finally:
        await mongo.close()
    return 0


def main(argv: list[str]) -> int:
    return asyncio.run(run(parser().parse_args(argv)))
