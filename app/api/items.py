"""Items: synchronous CRUD on MongoDB."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from app.api.auth import ItemReader, ItemWriter
from app.api.clients import api_clients
from app.items import ItemRepository
from app.schemas import ErrorBody, Item, ItemCreate, ItemPage, ItemUpdate

Responses = dict[int | str, dict[str, Any]]
router = APIRouter(prefix="/api/items", tags=["items"])
NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No item has this id"}}


def repository(request: Request) -> ItemRepository:
    return api_clients(request).items


def _not_found(item_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"item {item_id!r} not found")


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_item(body: ItemCreate, request: Request, caller: ItemWriter) -> Item:
    items = repository(request)
    return await items.create(body, caller.owner)


@router.get("")
async def list_items(
    request: Request,
    caller: ItemReader,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    name_prefix: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> ItemPage:
    """The caller's items (an admin key: everyone's), newest first."""
    items = repository(request)
    try:
        return await items.list(
            caller.scope_owner, limit=limit, cursor=cursor, name_prefix=name_prefix
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.get("/{item_id}", responses=NOT_FOUND)
async def get_item(item_id: str, request: Request, caller: ItemReader) -> Item:
    items = repository(request)
    item = await items.get(item_id, caller.scope_owner)
    if item is None:
        raise _not_found(item_id)
    return item


@router.patch("/{item_id}", responses=NOT_FOUND)
async def update_item(item_id: str, body: ItemUpdate, request: Request, caller: ItemWriter) -> Item:
    items = repository(request)
    item = await items.update(item_id, body, caller.scope_owner)
    if item is None:
        raise _not_found(item_id)
    return item


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_item(item_id: str, request: Request, caller: ItemWriter) -> Response:
    items = repository(request)
    if not await items.delete(item_id, caller.scope_owner):
        raise _not_found(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
