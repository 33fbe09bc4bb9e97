"""MongoDB clients and indexes: the async client for the API, the sync one for workers."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

from app.settings import Settings

ITEMS = "items"
TASK_RESULTS = "task_results"
DEAD_LETTERS = "dead_letters"

INDEXES: dict[str, list[IndexModel]] = {
    ITEMS: [
        # Imports upsert by owner and external id, kept as one field
        # (import_key()); API-created items have none. One field, not a
        # compound key: the MongoDB emulator the lab and the tests run (README)
        # scans for a compound key, and a 500-row batch outran the worker's
        # socket timeout; on MongoDB both are one index lookup.
        IndexModel(
            [("import_key", ASCENDING)],
            name="import_key_unique",
            unique=True,
            partialFilterExpression={"import_key": {"$exists": True}},
        ),
        # An owner's items, newest first; and by name prefix.
        IndexModel([("owner", ASCENDING), ("_id", DESCENDING)], name="owner_newest"),
        IndexModel(
            [("owner", ASCENDING), ("name", ASCENDING), ("_id", DESCENDING)],
            name="owner_name_newest",
        ),
        # An admin's listing by name prefix, across owners.
        IndexModel([("name", ASCENDING), ("_id", DESCENDING)], name="name_newest"),
    ],
    TASK_RESULTS: [IndexModel([("finished_at", DESCENDING)], name="finished_newest")],
    DEAD_LETTERS: [IndexModel([("dead_at", DESCENDING), ("_id", DESCENDING)], name="dead_newest")],
}


def import_key(owner: str | None, external_id: str) -> str:
    """An imported item's unique key: its owner's and its external id (an owner
    has no "/", so the two never run together)."""
    return f"{owner or ''}/{external_id}"


def _client_options(settings: Settings) -> dict[str, Any]:
    timeout = settings.mongodb_timeout_ms
    return {
        "serverSelectionTimeoutMS": timeout,
        "connectTimeoutMS": timeout,
        "socketTimeoutMS": max(timeout * 5, 10_000),
        "tz_aware": True,
        "appname": "queuesvc",
    }


def async_client(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(settings.mongodb_uri.get_secret_value(), **_client_options(settings))


def sync_client(settings: Settings) -> MongoClient[dict[str, Any]]:
    return MongoClient(settings.mongodb_uri.get_secret_value(), **_client_options(settings))


# Indexes of earlier versions that now get in the way: external ids were
# unique across everyone before items had owners.
RETIRED = {ITEMS: ["external_id_unique", "owner_external_id_unique"]}


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Create the indexes (a no-op when they exist) and drop retired ones."""
    for collection, models in INDEXES.items():
        await db[collection].create_indexes(models)
    for collection, names in RETIRED.items():
        existing = await (await db[collection].list_indexes()).to_list()
        for name in names:
            if any(index["name"] == name for index in existing):
                await db[collection].drop_index(name)


def ensure_indexes_sync(db: Database[dict[str, Any]]) -> None:
    for collection, models in INDEXES.items():
        db[collection].create_indexes(models)
    for collection, names in RETIRED.items():
        existing = [index["name"] for index in db[collection].list_indexes()]
        for name in names:
            if name in existing:
                db[collection].drop_index(name)
