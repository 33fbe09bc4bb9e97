"""Items: synchronous CRUD on MongoDB."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from app.api.clients import api_clients
from app.api.responses import BODY, documented
from app.items import ItemRepository
from app.schemas import CURSOR_PATTERN, Item, ItemCreate, ItemPage, ItemUpdate

router = APIRouter(prefix="/api/items", tags=["items"])


def repository(request: Request) -> ItemRepository:
    return api_clients(request).items


def _not_found(item_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"item {item_id!r} not found")


@router.post("", status_code=status.HTTP_201_CREATED, responses=documented(*BODY))
async def create_item(body: ItemCreate, request: Request) -> Item:
    items = repository(request)
    return await items.create(body)


@router.get("", responses=documented())
async def list_items(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page"),
    ] = None,
    name_prefix: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> ItemPage:
    """Newest first."""
    items = repository(request)
    return await items.list(limit=limit, cursor=cursor, name_prefix=name_prefix)


@router.get("/{item_id}", responses=documented(404))
async def get_item(item_id: str, request: Request) -> Item:
    items = repository(request)
    item = await items.get(item_id)
    if item is None:
        raise _not_found(item_id)
    return item


@router.patch("/{item_id}", responses=documented(404, *BODY))
async def update_item(item_id: str, body: ItemUpdate, request: Request) -> Item:
    items = repository(request)
    item = await items.update(item_id, body)
    if item is None:
        raise _not_found(item_id)
    return item


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(404))
async def delete_item(item_id: str, request: Request) -> Response:
    items = repository(request)
    if not await items.delete(item_id):
        raise _not_found(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
