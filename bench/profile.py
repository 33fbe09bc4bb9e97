"""A py-spy profile of one gunicorn worker, and its summary: the frames and the
module groups that hold the samples.

py-spy's raw ("collapsed") output has one line per distinct stack, root first:
``func (file:line);func (file:line);... COUNT``. It is recorded with full file
names, shortened here to the package part (``app/publisher.py``,
``redis/asyncio/client.py``, ``asyncio/events.py``): py-spy's own shortening
drops the top of namespace packages (``opentelemetry/trace/...`` becomes
``trace/...``).
A frame's own share is the samples where it is the innermost frame; its total
share the samples where it appears at all. The process's bootstrap (gunicorn,
the uvicorn worker, asyncio's runner, which enters uvloop's loop in C) sits at
the root of every full stack and says nothing, so it is cut off; a sample with
only that left was in the event loop itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

TOP_FRAMES = 15
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_STDLIB = re.compile(r"/lib/python3\.\d+/")

# Files of the process's bootstrap, cut from the root of each stack.
BOOTSTRAP = (
    "<frozen runpy>",
    "gunicorn/",
    "uvicorn_worker/",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
)
EVENT_LOOP = "event loop (asyncio/uvloop)"
# Module groups by file prefix, first match wins; our own code goes by module.
GROUPS = (
    ("asyncio/", EVENT_LOOP),
    ("uvloop/", EVENT_LOOP),
    ("selectors.py", EVENT_LOOP),
    ("starlette/middleware/", "starlette middleware"),
    ("starlette/", "starlette/fastapi routing"),
    ("fastapi/", "starlette/fastapi routing"),
    ("pydantic", "pydantic"),
    ("uvicorn/", "uvicorn (HTTP)"),
    ("httptools/", "uvicorn (HTTP)"),
    ("aio_pika/", "aio_pika/aiormq/pamqp (AMQP)"),
    ("aiormq/", "aio_pika/aiormq/pamqp (AMQP)"),
    ("pamqp/", "aio_pika/aiormq/pamqp (AMQP)"),
    ("redis/", "redis"),
    ("kombu/", "celery/kombu (task message)"),
    ("celery/", "celery/kombu (task message)"),
    ("prometheus_client/", "prometheus_client"),
    # FastAPI asks it on every request whether telemetry is on.
    ("opentelemetry/", "opentelemetry"),
)


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    def __str__(self) -> str:
        return f"{self.function} ({self.file})"


@dataclass(frozen=True)
class Stack:
    frames: tuple[Frame, ...]  # root first
    count: int


def short_path(file: str, root: str = "") -> str:
    """A file as its module path: below site-packages, the standard library's
    directory or `root` (the project's checkout); as it is otherwise."""
    if "/site-packages/" in file:
        return file.rsplit("/site-packages/", 1)[1]
    stdlib = _STDLIB.search(file)
    if stdlib:
        return file[stdlib.end() :]
    if root and file.startswith(root.rstrip("/") + "/"):
        return file[len(root.rstrip("/")) + 1 :]
    return file


def parse_frame(text: str, root: str = "") -> Frame:
    """``func (file:line)``; line numbers are dropped, so a function is one frame."""
    match = _FRAME.match(text)
    if not match:
        return Frame(text, "")
    return Frame(match["function"], short_path(match["file"], root))


def parse_collapsed(text: str, root: str = "") -> list[Stack]:
    stacks = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        trace, _, count = line.rpartition(" ")
        if not trace or not count.isdigit():
            raise ValueError(f"line {number} is not 'frames count': {line!r}")
        frames = tuple(parse_frame(part, root) for part in trace.split(";"))
        stacks.append(Stack(frames, int(count)))
    return stacks


def module_of(file: str) -> str:
    """``app/api/async_tasks.py`` -> ``app.api.async_tasks``."""
    return file.removesuffix(".py").replace("/", ".")


def group_of(frame: Frame) -> str:
    if frame.file.startswith("app/"):
        return module_of(frame.file)
    for prefix, group in GROUPS:
        if frame.file.startswith(prefix):
            return group
    if frame.file.startswith("<frozen "):  # a frozen standard module: <frozen os>
        return frame.file.removeprefix("<frozen ").removesuffix(">")
    return frame.file.split("/", 1)[0].removesuffix(".py") or frame.function


def without_bootstrap(frames: Sequence[Frame]) -> tuple[Frame, ...]:
    """The stack below the bootstrap; its last frame when nothing else is left
    (the loop itself, in C, was running)."""
    cut = 0
    while cut < len(frames) and frames[cut].file.startswith(BOOTSTRAP):
        cut += 1
    return tuple(frames[cut:]) or tuple(frames[-1:])


@dataclass(frozen=True)
class Share:
    name: str
    own: int
    total: int


@dataclass(frozen=True)
class Summary:
    samples: int
    frames: list[Share]  # by own samples, most first
    groups: list[Share]


def _shares(own: Counter[str], total: Counter[str]) -> list[Share]:
    return sorted(
        (Share(name, own[name], total[name]) for name in total),
        key=lambda s: (-s.own, -s.total, s.name),
    )


def summarize(stacks: Iterable[Stack]) -> Summary:
    frame_own: Counter[str] = Counter()
    frame_total: Counter[str] = Counter()
    group_own: Counter[str] = Counter()
    group_total: Counter[str] = Counter()
    samples = 0
    for stack in stacks:
        frames = without_bootstrap(stack.frames)
        if not frames:
            continue
        samples += stack.count
        leaf = frames[-1]
        frame_own[str(leaf)] += stack.count
        group_own[group_of(leaf)] += stack.count
        # A recursive frame or a group met twice in one stack counts once.
        for name in {str(frame) for frame in frames}:
            frame_total[name] += stack.count
        for group in {group_of(frame) for frame in frames}:
            group_total[group] += stack.count
    return Summary(samples, _shares(frame_own, frame_total), _shares(group_own, group_total))


def format_summary(summary: Summary, top: int = TOP_FRAMES) -> str:
    def pct(n: int) -> str:
        return f"{n / summary.samples:6.1%}" if summary.samples else "     -"

    lines = [f"{'own':>6} {'total':>6}  group ({summary.samples} samples; top {top} by own)"]
    lines += [f"{pct(s.own)} {pct(s.total)}  {s.name}" for s in summary.groups[:top]]
    rest = summary.groups[top:]
    if rest:
        own = sum(s.own for s in rest)
        lines.append(f"{pct(own)} {'':6}  {len(rest)} more groups")
    lines += ["", f"{'own':>6} {'total':>6}  frame (top {top} by own samples)"]
    lines += [f"{pct(s.own)} {pct(s.total)}  {s.name}" for s in summary.frames[:top]]
    return "\n".join(lines)


def py_spy() -> str:
    """py-spy from this interpreter's environment (the dev extras), else PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy: install the dev extras (.[dev])")
    return found


def record(pid: int, seconds: int, output: Path, rate: int = 100) -> subprocess.Popen[str]:
    """Start sampling `pid` for `seconds` into `output` (raw format); the caller waits.
    Sampling pauses the process briefly per sample: profiled runs are not measured ones."""
    return subprocess.Popen(
        [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--full-filenames",
            "--output",
            str(output),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
