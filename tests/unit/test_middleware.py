"""The ASGI middlewares on a tiny real app (Starlette's TestClient, no mocks)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from app.content_type import FormBodyAsJson
from app.limits import BodySizeLimit


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/small")
    @app.post("/echo")
    async def echo(request: Request) -> dict[str, object]:
        body = await request.body()
        return {"length": len(body), "type": request.headers.get("content-type")}

    app.add_middleware(BodySizeLimit, default_limit=300, limits={"/small": 100})
    app.add_middleware(FormBodyAsJson)
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
