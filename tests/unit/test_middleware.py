"""The ASGI middlewares on a tiny real app (Starlette's TestClient, no mocks)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from app.overload import InFlightLimit
from app.request_body import RequestBody


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/small")
    @app.post("/echo")
    async def echo(request: Request) -> dict[str, object]:
        body = await request.body()
        return {"length": len(body), "type": request.headers.get("content-type")}

    app.add_middleware(RequestBody, default_limit=300, limits={"/small": 100})
    return app


def test_declared_oversized_body_is_413_json() -> None:
    client = TestClient(make_app())
    response = client.post("/small", content=b"x" * 101)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 100 bytes"}
    assert client.post("/small", content=b"x" * 100).json()["length"] == 100
    assert client.post("/echo", content=b"x" * 300).json()["length"] == 300


def test_streamed_oversized_body_is_413_json() -> None:
    # The app sees a disconnect; whatever it answers then is dropped.
    client = TestClient(make_app(), raise_server_exceptions=False)
    response = client.post("/small", content=iter([b"x" * 60, b"x" * 60]))
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body larger")


def test_form_content_type_is_read_as_json() -> None:
    client = TestClient(make_app())
    response = client.post(
        "/echo", content=b'{"a": 1}', headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.json()["type"] == "application/json"
    multipart = client.post("/echo", files={"f": ("a.csv", b"x")})
    assert multipart.json()["type"].startswith("multipart/form-data")


async def _shed_app_figures() -> tuple[list[int], httpx.Response, int]:
    """Three requests held in a route of a process limited to two at once."""
    release, both_started = asyncio.Event(), asyncio.Event()
    started = 0
    app = FastAPI()

    @app.get("/hold")
    async def hold() -> dict[str, str]:
        nonlocal started
        started += 1
        if started == 2:
            both_started.set()
        await release.wait()
        return {"status": "done"}

    app.add_middleware(InFlightLimit, limit=2, retry_after_seconds=3)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        held = [asyncio.create_task(client.get("/hold")) for _ in range(2)]
        await both_started.wait()
        shed = await client.get("/hold")
        release.set()
        statuses = [(await task).status_code for task in held]
        after = await client.get("/hold")  # the slots came back
        return [*statuses, after.status_code], shed, started


def test_a_request_over_the_in_flight_limit_is_shed_at_once() -> None:
    statuses, shed, started = asyncio.run(_shed_app_figures())
    assert statuses == [200, 200, 200]
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "3"
    assert shed.headers["content-type"] == "application/json"
    assert shed.json() == {"detail": "the server is busy; try again shortly"}
    assert started == 3  # the shed request never reached the route
