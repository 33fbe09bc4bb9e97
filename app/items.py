"""Items on MongoDB, through PyMongo's async client."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from app.schemas import Item, ItemCreate, ItemPage, ItemUpdate


def now() -> datetime:
    """The current time at BSON's precision (milliseconds), so responses match reads."""
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)


def parse_id(value: str) -> ObjectId | None:
    """The ObjectId for a path parameter, or None when it cannot be one."""
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


def to_item(doc: dict[str, Any]) -> Item:
    return Item(
        id=str(doc["_id"]),
        name=doc["name"],
        description=doc.get("description"),
        external_id=doc.get("external_id"),
        created_at=doc["created_at"],
        updated_at=doc.get("updated_at", doc["created_at"]),
    )


def _scoped(query: dict[str, Any], owner: str | None) -> dict[str, Any]:
    """`query` within `owner`'s items; None (an admin) sees every owner's."""
    return query if owner is None else {**query, "owner": owner}


class ItemRepository:
    """Items by owner: every method takes the owner whose items it may touch,
    None for all (an admin key); another owner's item is simply not there."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self._collection = collection

    async def create(self, body: ItemCreate, owner: str) -> Item:
        created = now()
        doc: dict[str, Any] = {
            "owner": owner,
            "name": body.name,
            "description": body.description,
            "created_at": created,
            "updated_at": created,
        }
        result = await self._collection.insert_one(doc)
        doc["_id"] = result.inserted_id
        return to_item(doc)

    async def get(self, item_id: str, owner: str | None) -> Item | None:
        oid = parse_id(item_id)
        if oid is None:
            return None
        doc = await self._collection.find_one(_scoped({"_id": oid}, owner))
        return to_item(doc) if doc else None

    async def list(
        self, owner: str | None, *, limit: int, cursor: str | None, name_prefix: str | None
    ) -> ItemPage:
        query: dict[str, Any] = _scoped({}, owner)
        if cursor is not None:
            after = parse_id(cursor)
            if after is None:
                raise ValueError("invalid cursor")
            query["_id"] = {"$lt": after}
        if name_prefix:
            query["name"] = {"$regex": "^" + re.escape(name_prefix)}
        docs = await self._collection.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list()
        items = [to_item(doc) for doc in docs[:limit]]
        next_cursor = items[-1].id if len(docs) > limit else None
        return ItemPage(items=items, next_cursor=next_cursor)

    async def update(self, item_id: str, body: ItemUpdate, owner: str | None) -> Item | None:
        oid = parse_id(item_id)
        if oid is None:
            return None
        changes = body.model_dump(include=body.model_fields_set)
        changes["updated_at"] = now()
        doc = await self._collection.find_one_and_update(
            _scoped({"_id": oid}, owner), {"$set": changes}, return_document=ReturnDocument.AFTER
        )
        return to_item(doc) if doc else None

    async def delete(self, item_id: str, owner: str | None) -> bool:
        oid = parse_id(item_id)
        if oid is None:
            return False
        result = await self._collection.delete_one(_scoped({"_id": oid}, owner))
        return result.deleted_count == 1
