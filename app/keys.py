"""API keys: what they look like, how they are kept, and who may do what.

A key is ``qsk_<id>_<secret>``: 16 hex characters of id, then 32 random bytes
in URL-safe base64. The id names the key in listings and logs; the key itself
is shown once, when it is made, and only its SHA-256 is stored (a random
256-bit secret needs no slow hash: there is nothing to guess). Keys live in
MongoDB's ``api_keys`` collection, with a name, an owner, scopes, a creation
time, an optional expiry and, once revoked, the time of revocation.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

API_KEYS = "api_keys"
KEY_RE = re.compile(r"^qsk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
# Owners name tenants in Redis keys and MongoDB fields: no separators, no spaces.
OWNER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# Where revocations are announced, so every API process forgets the key at once.
REVOKED_CHANNEL = "queuesvc:api-keys:revoked"


class Scope(enum.StrEnum):
    TASKS_SUBMIT = "tasks:submit"
    TASKS_READ = "tasks:read"
    ITEMS_READ = "items:read"
    ITEMS_WRITE = "items:write"
    ADMIN = "admin"


def parse_scopes(text: str) -> frozenset[Scope]:
    """Comma-separated scope names; an unknown name is an error that lists the known ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("no scope given")
    known = {scope.value for scope in Scope}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return frozenset(Scope(name) for name in names)


def check_owner(owner: str) -> str:
    if not OWNER_RE.match(owner):
        raise ValueError(
            f"owner {owner!r}: 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit"
        )
    return owner


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (id, key)."""
    key_id = secrets.token_hex(8)
    return key_id, f"qsk_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id a well-formed key carries, or None."""
    match = KEY_RE.match(key)
    return match.group(1) if match else None


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    owner: str
    scopes: frozenset[Scope]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    key_hash: str = ""

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.key_hash, digest(key))

    def usable(self, now: datetime) -> str | None:
        """None when the key may be used now, else why not."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return None

    def public(self) -> dict[str, Any]:
        """What a listing shows: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "scopes": sorted(scope.value for scope in self.scopes),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def from_document(doc: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=doc["_id"],
        name=doc["name"],
        owner=doc["owner"],
        scopes=frozenset(Scope(s) for s in doc["scopes"] if s in Scope._value2member_map_),
        created_at=doc["created_at"],
        expires_at=doc.get("expires_at"),
        revoked_at=doc.get("revoked_at"),
        key_hash=doc["hash"],
    )


class KeyStore:
    """The keys in MongoDB (async: the API and the `keys` command share it)."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self._keys = collection

    async def create(
        self, *, owner: str, name: str, scopes: frozenset[Scope], expires_at: datetime | None
    ) -> tuple[ApiKey, str]:
        """A new key: the stored record and the key itself (shown once)."""
        key_id, key = new_key()
        return await self._insert(key_id, key, owner, name, scopes, expires_at), key

    async def seed(
        self, key: str, *, owner: str, name: str, scopes: frozenset[Scope]
    ) -> tuple[ApiKey, bool]:
        """Make sure a key made elsewhere (the vault) exists with these settings.

        Returns the record and whether anything changed. A revoked key stays revoked.
        """
        key_id = key_id_of(key)
        if key_id is None:
            raise ValueError("not a queuesvc key (expected qsk_<16 hex>_<43 base64url>)")
        wanted = {"hash": digest(key), "owner": owner, "name": name, "scopes": sorted(scopes)}
        current = await self._keys.find_one({"_id": key_id})
        if current is None:
            return await self._insert(key_id, key, owner, name, scopes, None), True
        if all(current.get(field) == value for field, value in wanted.items()):
            return from_document(current), False
        doc = await self._keys.find_one_and_update(
            {"_id": key_id}, {"$set": wanted}, return_document=ReturnDocument.AFTER
        )
        assert doc is not None
        return from_document(doc), True

    async def _insert(
        self,
        key_id: str,
        key: str,
        owner: str,
        name: str,
        scopes: frozenset[Scope],
        expires_at: datetime | None,
    ) -> ApiKey:
        doc = {
            "_id": key_id,
            "hash": digest(key),
            "name": name,
            "owner": check_owner(owner),
            "scopes": sorted(scope.value for scope in scopes),
            "created_at": _now(),
            "expires_at": expires_at,
            "revoked_at": None,
        }
        await self._keys.insert_one(doc)
        return from_document(doc)

    async def get(self, key_id: str) -> ApiKey | None:
        doc = await self._keys.find_one({"_id": key_id})
        return from_document(doc) if doc else None

    async def list(self, owner: str | None = None) -> list[ApiKey]:
        query = {} if owner is None else {"owner": owner}
        return [from_document(doc) async for doc in self._keys.find(query).sort("created_at", 1)]

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Mark the key revoked (once; a second call keeps the first time)."""
        await self._keys.update_one(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": _now()}}
        )
        return await self.get(key_id)


def _now() -> datetime:
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)
