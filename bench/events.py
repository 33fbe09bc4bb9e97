"""Task event streams on one API worker: how many, at what memory, CPU and delivery latency,
and what they cost Redis compared with clients polling the status route once a second.

    python -m bench.events [--streams 1000] [--seconds 20] [--interval 1.0]

Locally, on loopback: a private redis-server (so its command counts are this run's
alone), the MongoDB of `python3 -m scripts.lab services` (or the emulator) for the
API key, and gunicorn with ONE worker. Each stream follows its own task (the worst
case: one channel subscription per stream). A writer thread moves every task once
per `--interval` through the real status script (app.status), as workers do; the
delivery latency is from just before that write to the event's arrival. Then the
same number of clients poll GET /api/async/status once a second, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from app.status import SyncStatusStore
from bench.apikeys import authorization, local_key, run_owner
from bench.local import services
from bench.paced import percentile
from tests.integration.services import Process, free_port, wait_http_ok, wait_until

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OPEN_AT_ONCE = 100  # streams being opened at the same time


@dataclass
class Deliveries:
    """Write times by (task, step), and each event's delay after its write."""

    written: dict[tuple[str, int], float] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    first_events: int = 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Calls and microseconds by command, server-wide."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for name, v in stats.items()}


@dataclass(frozen=True)
class RedisLoad:
    calls: dict[str, int]
    usec: int

    @property
    def commands(self) -> int:
        return sum(self.calls.values())

    def describe(self) -> str:
        parts = ", ".join(f"{name} {calls}" for name, calls in sorted(self.calls.items()))
        return f"{self.commands} commands, {self.usec / 1000:.0f} ms of Redis CPU ({parts})"


def load_between(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> RedisLoad:
    calls, usec = {}, 0
    for name, (total, spent) in after.items():
        was_calls, was_usec = before.get(name, (0, 0))
        if total > was_calls and name not in ("info", "hello", "ping", "client|setinfo"):
            calls[name] = total - was_calls
            usec += spent - was_usec
    return RedisLoad(calls, usec)


@contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    port = free_port()
    process = Process(
        "redis",
        [
            *("redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""),
            *("--appendonly", "no", "--dir", str(workdir), "--maxclients", "20000"),
        ],
        dict(os.environ),
        workdir / "redis.log",
    )
    process.start()
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answering() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answering, 20, 0.1, "private redis answering")
        yield url
    finally:
        client.close()
        process.stop()


def api_worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker, found {children}")
    return int(children[0])


async def follow(
    base: str, headers: dict[str, str], task_id: str, results: Deliveries, opened: asyncio.Semaphore
) -> None:
    """One stream, read with a bare socket so the client costs little per stream."""
    host, port = base.removeprefix("http://").split(":")
    async with opened:
        reader, writer = await asyncio.open_connection(host, int(port))
        request = (
            f"GET /api/async/events/{task_id} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {headers['Authorization']}\r\nAccept: text/event-stream\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r}")
    first = True
    try:
        while line := await reader.readline():
            if not line.startswith(b"data: "):
                continue
            arrived = time.time()
            body = json.loads(line[6:])
            if first:
                first = False
                results.first_events += 1
                continue
            written = results.written.get((task_id, body["progress"]["current"]))
            if written is not None:
                results.delays.append(arrived - written)
    finally:
        writer.close()


def write_steadily(
    store: SyncStatusStore,
    task_ids: list[str],
    interval: float,
    seconds: float,
    results: Deliveries,
) -> int:
    """Move every task one step per `interval`, spread evenly; returns the writes made."""
    writes, step = 0, 0
    gap = interval / len(task_ids)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        step += 1
        for task_id in task_ids:
            due = start + writes * gap
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            results.written[(task_id, step)] = time.time()
            store.update(task_id, status="PROGRESS", current=step, total=1_000_000)
            writes += 1
    return writes


async def open_streams(
    base: str, headers: dict[str, str], task_ids: list[str], results: Deliveries
) -> list[asyncio.Task[None]]:
    opened = asyncio.Semaphore(OPEN_AT_ONCE)
    streams = [
        asyncio.create_task(follow(base, headers, task_id, results, opened)) for task_id in task_ids
    ]
    deadline = time.monotonic() + 120
    while results.first_events < len(task_ids):
        failed = [s for s in streams if s.done() and s.exception() is not None]
        if failed:
            raise RuntimeError(f"a stream failed: {failed[0].exception()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {results.first_events} streams opened")
        await asyncio.sleep(0.1)
    return streams


async def poll(base: str, headers: dict[str, str], task_ids: list[str], seconds: float) -> int:
    """Each task polled once a second by its own client, as the tutorial's reader does
    with curl (a kept-alive connection each, bare sockets like the streams); returns
    the answers that were 200."""
    host, port = base.removeprefix("http://").split(":")
    opened = asyncio.Semaphore(OPEN_AT_ONCE)
    start = time.monotonic() + 1  # every client connected first

    async def client(task_id: str, phase: float) -> int:
        async with opened:
            reader, writer = await asyncio.open_connection(host, int(port))
        request = (
            f"GET /api/async/status/{task_id} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {headers['Authorization']}\r\n\r\n"
        ).encode()
        answered, second = 0, 0
        try:
            while time.monotonic() - start < seconds:
                pause = start + phase + second - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                second += 1
                writer.write(request)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                answered += b" 200 " in status
        finally:
            writer.close()
        return answered

    # Spread over the second, as independent clients are.
    phases = [index / len(task_ids) for index in range(len(task_ids))]
    return sum(await asyncio.gather(*map(client, task_ids, phases)))


async def measure(args: argparse.Namespace) -> None:
    database = f"bench_events_{uuid.uuid4().hex[:8]}"
    with services(database, {}) as local, private_redis(local.workdir) as redis_url:
        env = {
            **local.env,
            "APP_REDIS_URL": redis_url,
            "APP_WORKERS": "1",
            # The streams and then as many pollers; closed streams linger until their
            # next heartbeat (2 s here) shows the server they are gone.
            "APP_MAX_CONNECTIONS": str(2 * args.streams + 500),
            "APP_EVENTS_HEARTBEAT_SECONDS": "2",
            "APP_EVENTS_MAX_STREAMS": str(args.streams + 100),
            "APP_MAX_IN_FLIGHT": "256",
            "APP_REDIS_MAX_CONNECTIONS": "256",
        }
        port = free_port()
        api = Process(
            "api",
            [
                *(sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf"),
                "app.main:create_app()",
            ],
            {**env, "APP_BIND": f"127.0.0.1:{port}"},
            local.workdir / "api.log",
        )
        api.start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http_ok(base + "/health/live")
            assert api.proc is not None
            await run_phases(args, env, base, api_worker_pid(api.proc.pid), redis_url)
        finally:
            api.stop()


async def run_phases(
    args: argparse.Namespace, env: dict[str, str], base: str, worker: int, redis_url: str
) -> None:
    owner = run_owner("events")
    headers = authorization(local_key(env, owner))
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    store = SyncStatusStore(redis.Redis.from_url(redis_url, decode_responses=True), 3600, 600)
    task_ids = [str(uuid.uuid4()) for _ in range(args.streams)]
    for task_id in task_ids:
        store.update(task_id, name="bench", status="STARTED", current=0, total=1_000_000)
        admin.hset(f"queuesvc:task:{task_id}", "owner", owner)
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:  # warm the key cache
        (await http.get(f"/api/async/status/{task_ids[0]}")).raise_for_status()
    rss_idle = rss_mib(worker)

    results = Deliveries()
    streams = await open_streams(base, headers, task_ids, results)
    await asyncio.sleep(1)
    rss_open = rss_mib(worker)
    redis_before, cpu_before, started = commandstats(admin), cpu_seconds(worker), time.monotonic()
    writes = await asyncio.to_thread(
        write_steadily, store, task_ids, args.interval, args.seconds, results
    )
    elapsed = time.monotonic() - started
    await asyncio.sleep(1)  # the last events arrive
    stream_cpu = (cpu_seconds(worker) - cpu_before) / (elapsed + 1) * 100
    stream_redis = load_between(redis_before, commandstats(admin))
    rss_steady = rss_mib(worker)
    for stream in streams:
        stream.cancel()
    await asyncio.gather(*streams, return_exceptions=True)

    await asyncio.sleep(5)  # the server's side of the streams ends at their next heartbeat
    redis_before, cpu_before, started = commandstats(admin), cpu_seconds(worker), time.monotonic()
    polls = await poll(base, headers, task_ids, args.seconds)
    elapsed_polling = time.monotonic() - started
    poll_cpu = (cpu_seconds(worker) - cpu_before) / elapsed_polling * 100
    poll_redis = load_between(redis_before, commandstats(admin))
    admin.close()

    delays = results.delays
    lines = [
        f"event streams on one API worker (pid {worker}): {args.streams} open, one task each",
        f"  worker memory: {rss_idle:.0f} MiB idle, {rss_open:.0f} MiB with the streams open "
        f"({(rss_open - rss_idle) * 1024 / args.streams:.1f} KiB per stream), "
        f"{rss_steady:.0f} MiB after the steady phase",
        f"  steady phase: {writes} status writes in {elapsed:.1f} s "
        f"({writes / elapsed:.0f}/s), {len(delays)} events received "
        f"({len(delays) / max(1, writes) * 100:.1f}% of the writes)",
        f"  worker CPU: {stream_cpu:.0f}% of a core",
    ]
    if delays:
        lines.append(
            "  delivery after the status write: "
            f"p50 {percentile(delays, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(delays, 0.99) * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms"
        )
    lines += [
        f"  Redis during the steady phase: {stream_redis.describe()}",
        f"    per status write: {stream_redis.commands / writes:.1f} commands, "
        f"{stream_redis.usec / writes:.1f} us; per open stream while it waits: nothing",
        f"polling instead: {args.streams} clients, GET /api/async/status once a second each",
        f"  {polls} answers in {elapsed_polling:.1f} s ({polls / elapsed_polling:.0f}/s), "
        f"worker CPU {poll_cpu:.0f}% of a core",
        f"  Redis while polling: {poll_redis.describe()}",
        f"    per poll: {poll_redis.commands / max(1, polls):.1f} commands, "
        f"{poll_redis.usec / max(1, polls):.1f} us; at 1/s each, {args.streams} pollers cost "
        f"{args.streams * poll_redis.commands / max(1, polls):.0f} commands/s "
        f"whether or not anything changed, on top of the same status writes",
    ]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between a task's writes"
    )
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
