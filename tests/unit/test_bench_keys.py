"""The benchmark's keys: the deployed key from the environment, every wrk
request keyed through bench/bearer.lua (a real wrk run against a small
server that checks the header), the unkeyed baseline's overrides, and the
key check's lines."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from fastapi import FastAPI

import bench.unkeyed
from app.access import Caller
from app.api import auth
from app.keys import Scope
from app.main import create_app
from app.settings import Settings
from bench.apikeys import TENANT_SCOPES, authorization, deployed_key
from bench.keycheck import key_check_lines
from bench.targets import Figures
from bench.wrkrun import wrk
from tests.unit.loopback_http import serving

REPO = Path(__file__).resolve().parents[2]
KEY = "qsk_0123456789abcdef_" + "k" * 43


def test_deployed_key_from_the_environment() -> None:
    assert deployed_key({"QUEUESVC_BENCH_KEY": f" {KEY}\n"}) == KEY


@pytest.mark.parametrize("environ", [{}, {"QUEUESVC_BENCH_KEY": "  "}])
def test_a_missing_deployed_key_is_a_clear_failure(environ: dict[str, str]) -> None:
    with pytest.raises(SystemExit, match=r"QUEUESVC_BENCH_KEY is not set.*api-key demo"):
        deployed_key(environ)


def test_tenant_scopes_are_all_but_admin() -> None:
    assert frozenset(Scope) - TENANT_SCOPES == {Scope.ADMIN}
    assert authorization(KEY) == {"Authorization": f"Bearer {KEY}"}


class _KeyChecking(BaseHTTPRequestHandler):
    """200 to a GET, 202 to a POST of JSON with "iterations": 1000, each only
    with the right key; 401 without it, 400 for another body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, status: int) -> None:
        if self.headers["Authorization"] != f"Bearer {KEY}":
            status = 401
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.answer(200)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.answer(202 if body.get("iterations") == 1000 else 400)


@pytest.fixture
def key_checking_server() -> Iterator[str]:
    with serving(_KeyChecking) as url:
        yield url


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_wrk_keys_every_request(key_checking_server: str) -> None:
    """A GET with the key alone; a counted submit through the chain bearer.lua ->
    count_status.lua -> post_process.lua, with WRK_ITERATIONS."""
    get = wrk(key_checking_server, threads=1, connections=2, duration=1, key=KEY)
    assert get.requests > 0
    assert get.non_2xx == 0
    submit = wrk(
        key_checking_server,
        threads=1,
        connections=2,
        duration=1,
        script=REPO / "bench/count_status.lua",
        env={"WRK_BASE_SCRIPT": str(REPO / "bench/post_process.lua"), "WRK_ITERATIONS": "1000"},
        key=KEY,
    )
    assert submit.statuses == {202: submit.requests}


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_wrk_without_a_key_sends_none(key_checking_server: str) -> None:
    run = wrk(key_checking_server, threads=1, connections=1, duration=1)
    assert run.non_2xx == run.requests > 0


def test_unkeyed_app_has_a_fixed_caller_for_every_key_dependency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def service() -> FastAPI:
        return create_app(Settings(env="test"))

    monkeypatch.setattr(bench.unkeyed.main, "create_app", service)
    monkeypatch.setenv("QUEUESVC_BENCH_OWNER", "bench-tenant-1")
    app = bench.unkeyed.create_app()
    assert set(app.dependency_overrides) == {*auth.NEEDS.values(), auth.OPS}
    caller = asyncio.run(app.dependency_overrides[auth.NEEDS[Scope.TASKS_SUBMIT]]())
    assert caller == Caller("bench-unkeyed", "bench-tenant-1", TENANT_SCOPES)
    assert not caller.is_admin
    assert asyncio.run(app.dependency_overrides[auth.OPS]()) is None


def test_key_check_lines() -> None:
    lines = key_check_lines(
        {
            "GET /api/items/{id}": (Figures(900, 60.0, 150.0, 0), Figures(1000, 55.5, 140.0, 0)),
            "POST /api/async/process": (Figures(500, 100, 300, 3), Figures(500, 101, 290, 0)),
        }
    )
    assert lines[0].startswith("key check, same run")
    header, items, submit = lines[3], lines[4], lines[5]
    assert header.split("|")[1].split() == ["req/s", "keyed", "unkeyed", "ratio"]
    assert items.split("|")[1].split() == ["900", "1000", "0.90x"]
    assert items.split("|")[2].split() == ["60.00", "55.50", "+4.50"]
    assert items.split("|")[3].split() == ["150.00", "140.00", "+10.00"]
    assert submit.split("|")[2].split() == ["100.00", "101.00", "-1.00"]
    # Only a route with errors gets a line saying so.
    assert lines[6:] == ["  POST /api/async/process: (non-2xx answers in these rates: keyed 3)"]
