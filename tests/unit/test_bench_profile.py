"""The benchmark's reading of py-spy's raw (collapsed) output: frames, the
bootstrap cut off, own and total shares by frame and by module group. The
sample is hand-written in the format py-spy 0.4 writes (--format raw)."""

from __future__ import annotations

import pytest

from bench.profile import (
    EVENT_LOOP,
    Frame,
    format_summary,
    group_of,
    parse_collapsed,
    parse_frame,
    short_path,
    summarize,
    without_bootstrap,
)

BOOT = (
    "_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);"
    "<module> (gunicorn/__main__.py:10);Arbiter.run (gunicorn/arbiter.py:247);"
    "UvicornWorker.run (uvicorn_worker/_workers.py:126);asyncio_run (uvicorn/_compat.py:30);"
    "Runner.run (asyncio/runners.py:118)"
)
REDIS = "Pipeline.execute (redis/asyncio/client.py:2262)"
ROUTE = (
    "ServerErrorMiddleware.__call__ (starlette/middleware/errors.py:164);"
    "APIRouter.app (fastapi/routing.py:700);submit_process (app/api/async_tasks.py:59)"
)
SAMPLE = f"""\
{BOOT} 3
{BOOT};{ROUTE};TaskPublisher.submit (app/publisher.py:110);{REDIS} 4
{ROUTE};TaskPublisher.submit (app/publisher.py:112);Exchange.publish (aio_pika/exchange.py:247) 2
{ROUTE};TaskPublisher.submit (app/publisher.py:113);TaskPublisher.submit (app/publisher.py:99) 1

"""


def test_frames() -> None:
    assert parse_frame("Runner.run (asyncio/runners.py:118)") == Frame(
        "Runner.run", "asyncio/runners.py"
    )
    assert parse_frame("_run_code (<frozen runpy>:88)") == Frame("_run_code", "<frozen runpy>")
    assert parse_frame("<module> (x.py)") == Frame("<module>", "x.py")
    assert parse_frame("odd") == Frame("odd", "")


def test_full_file_names_are_shortened() -> None:
    site = "/srv/x/.venv/lib/python3.11/site-packages"
    assert parse_frame(f"get_tracer ({site}/opentelemetry/trace/__init__.py:1)") == Frame(
        "get_tracer", "opentelemetry/trace/__init__.py"
    )
    assert short_path("/usr/local/lib/python3.11/asyncio/events.py") == "asyncio/events.py"
    assert short_path("/work/wt/app/publisher.py", "/work/wt") == "app/publisher.py"
    assert short_path("/work/wt/app/publisher.py", "/work/wt/") == "app/publisher.py"
    assert short_path("/elsewhere/x.py", "/work/wt") == "/elsewhere/x.py"
    assert short_path("<frozen runpy>") == "<frozen runpy>"
    stacks = parse_collapsed(
        f"f (/work/wt/app/status.py:3);g ({site}/redis/client.py:9) 2\n", "/work/wt"
    )
    assert [f.file for f in stacks[0].frames] == ["app/status.py", "redis/client.py"]


def test_parse_collapsed() -> None:
    stacks = parse_collapsed(SAMPLE)
    assert [s.count for s in stacks] == [3, 4, 2, 1]
    assert stacks[1].frames[0] == Frame("_run_module_as_main", "<frozen runpy>")
    assert stacks[1].frames[-1] == Frame("Pipeline.execute", "redis/asyncio/client.py")
    with pytest.raises(ValueError, match="line 1"):
        parse_collapsed("a (b.py:1);c (d.py:2)\n")


def test_bootstrap_is_cut() -> None:
    stacks = parse_collapsed(SAMPLE)
    # Only the bootstrap: the loop itself was running; its last frame stays.
    assert without_bootstrap(stacks[0].frames) == (Frame("Runner.run", "asyncio/runners.py"),)
    assert without_bootstrap(stacks[1].frames)[0].file == "starlette/middleware/errors.py"
    # A coroutine's own stack has no bootstrap.
    assert without_bootstrap(stacks[2].frames) == stacks[2].frames


def test_groups() -> None:
    assert group_of(Frame("f", "app/api/async_tasks.py")) == "app.api.async_tasks"
    assert group_of(Frame("f", "asyncio/streams.py")) == EVENT_LOOP
    assert group_of(Frame("f", "starlette/middleware/errors.py")) == "starlette middleware"
    assert group_of(Frame("f", "fastapi/routing.py")) == "starlette/fastapi routing"
    assert group_of(Frame("f", "pydantic_core/core_schema.py")) == "pydantic"
    assert group_of(Frame("f", "pamqp/encode.py")) == group_of(Frame("g", "aio_pika/x.py"))
    assert group_of(Frame("f", "uuid.py")) == "uuid"
    assert group_of(Frame("f", "<frozen os>")) == "os"
    assert group_of(Frame("f", "opentelemetry/trace/__init__.py")) == "opentelemetry"
    assert group_of(Frame("f", "some/where.py")) == "some"


def test_summary_shares() -> None:
    summary = summarize(parse_collapsed(SAMPLE))
    assert summary.samples == 10
    groups = {s.name: (s.own, s.total) for s in summary.groups}
    assert groups["redis"] == (4, 4)
    assert groups[EVENT_LOOP] == (3, 3)
    assert groups["app.publisher"] == (1, 7)  # the recursive frame counted once
    assert groups["starlette middleware"] == (0, 7)
    assert "gunicorn" not in groups  # the bootstrap says nothing
    frames = {s.name: (s.own, s.total) for s in summary.frames}
    assert frames["TaskPublisher.submit (app/publisher.py)"] == (1, 7)
    assert frames["Runner.run (asyncio/runners.py)"] == (3, 3)
    # Most own samples first.
    assert summary.frames[0].name == "Pipeline.execute (redis/asyncio/client.py)"
    assert summary.groups[0].name == "redis"


def test_format_summary() -> None:
    text = format_summary(summarize(parse_collapsed(SAMPLE)), top=2)
    lines = text.splitlines()
    assert lines[0].endswith("group (10 samples; top 2 by own)")
    assert lines[1:3] == [" 40.0%  40.0%  redis", " 30.0%  30.0%  " + EVENT_LOOP]
    # The rest in one line: app.publisher, aio_pika, app.api.async_tasks, ...
    assert lines[3] == " 30.0%" + " " * 9 + "5 more groups"
    frame_lines = lines[lines.index(next(x for x in lines if "frame (top 2" in x)) + 1 :]
    assert len(frame_lines) == 2
    assert format_summary(summarize([])).startswith("   own  total  group (0 samples;")
