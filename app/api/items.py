"""Items: synchronous CRUD on MongoDB."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from app.api.auth import ItemReader, ItemWriter
from app.api.clients import api_clients
from app.api.responses import BODY, documented, keyed
from app.items import ItemRepository
from app.schemas import CURSOR_PATTERN, Item, ItemCreate, ItemPage, ItemUpdate

router = APIRouter(prefix="/api/items", tags=["items"], responses=keyed())


def repository(request: Request) -> ItemRepository:
    return api_clients(request).items


def _not_found(item_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"item {item_id!r} not found")


@router.post("", status_code=status.HTTP_201_CREATED, responses=documented(*BODY))
async def create_item(body: ItemCreate, request: Request, caller: ItemWriter) -> Item:
    items = repository(request)
    return await items.create(body, caller.owner)


@router.get("", responses=documented())
async def list_items(
    request: Request,
    caller: ItemReader,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page"),
    ] = None,
    name_prefix: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> ItemPage:
    """The caller's items (an admin key: everyone's), newest first."""
    items = repository(request)
    return await items.list(caller.scope_owner, limit=limit, cursor=cursor, name_prefix=name_prefix)


@router.get("/{item_id}", responses=documented(404))
async def get_item(item_id: str, request: Request, caller: ItemReader) -> Item:
    items = repository(request)
    item = await items.get(item_id, caller.scope_owner)
    if item is None:
        raise _not_found(item_id)
    return item


@router.patch("/{item_id}", responses=documented(404, *BODY))
async def update_item(item_id: str, body: ItemUpdate, request: Request, caller: ItemWriter) -> Item:
    items = repository(request)
    item = await items.update(item_id, body, caller.scope_owner)
    if item is None:
        raise _not_found(item_id)
    return item


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(404))
async def delete_item(item_id: str, request: Request, caller: ItemWriter) -> Response:
    items = repository(request)
    if not await items.delete(item_id, caller.scope_owner):
        raise _not_found(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
