"""Task changes pushed to event streams: one shared Redis subscription per API process.

The status script (app.status) publishes the whole record on the task's channel
each time it writes, with the record's sequence number, `seq`. An `EventHub`
holds one Pub/Sub connection for the process and subscribes to a task's
channel while at least one stream follows that task; each message is decoded
once and handed to the task's subscribers. A subscriber keeps only the newest
snapshot: a record is a whole state, so a slow client skips stale ones rather
than queueing them.

A stream reads the record only after its channel's subscription is confirmed,
so no change falls between the two; a confirmation that comes again (the
connection was lost and redis-py subscribed anew) asks the task's streams to
read the record once more, which covers what the outage hid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from app.schemas import TERMINAL_STATES, TaskStatus
from app.status import EVENTS_PREFIX, decode, events_channel

log = logging.getLogger(__name__)
# Always subscribed, so the connection stays in Pub/Sub mode with no stream open.
HUB_CHANNEL = EVENTS_PREFIX.rstrip(":")
RESUBSCRIBE_PAUSE_SECONDS = 1.0
# Every API process's hubs, so a worker that is stopping can end their streams.
_HUBS: weakref.WeakSet[EventHub] = weakref.WeakSet()


@dataclass(frozen=True)
class Snapshot:
    """A task's state; `seq` numbers it (None: read from MongoDB, the record is gone)."""

    seq: int | None
    status: TaskStatus

    @property
    def final(self) -> bool:
        return self.status.status in TERMINAL_STATES

    @classmethod
    def of_record(cls, task_id: str, raw: Mapping[str, str]) -> Snapshot:
        return cls(int(raw.get("seq", 0)), decode(task_id, raw))

    def newer_than(self, seq: int | None) -> bool:
        return seq is None or (self.seq is not None and self.seq > seq)


def record_of_message(data: str) -> dict[str, str]:
    """The record a status script published: HGETALL's flat list, as JSON."""
    flat = json.loads(data)
    if not isinstance(flat, list) or len(flat) % 2:
        raise ValueError("not a flat list of field/value pairs")
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


class Subscriber:
    """One stream's inbox: the newest snapshot, a request to read afresh, or the end."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.confirmed = asyncio.Event()
        self.latest: Snapshot | None = None
        self.resync = False
        self.ended = False
        self._changed = asyncio.Event()

    def deliver(self, snapshot: Snapshot) -> None:
        if self.latest is None or snapshot.newer_than(self.latest.seq):
            self.latest = snapshot
            self._changed.set()

    def ask_resync(self) -> None:
        self.resync = True
        self._changed.set()

    def end(self) -> None:
        self.ended = True
        self._changed.set()

    async def wait(self, seconds: float) -> bool:
        """Whether something came within `seconds`."""
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    def take(self) -> Snapshot | None:
        latest, self.latest = self.latest, None
        return latest


class TooManyStreams(Exception):
    pass


class EventHub:
    """The process's one subscription to task events, fanned out to its streams."""

    def __init__(self, client: aioredis.Redis, max_streams: int) -> None:
        self._client = client
        self._max_streams = max_streams
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._streams = 0
        self._pubsub: PubSub | None = None
        self._confirmed: set[str] = set()
        self._listener: asyncio.Task[None] | None = None
        self.listening = False
        self.draining = False
        _HUBS.add(self)

    @property
    def streams(self) -> int:
        return self._streams

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        self.drain()
        if self._listener is not None:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener

    def drain(self) -> None:
        """End every open stream now, and any opened after (the process is stopping):
        clients resume elsewhere."""
        self.draining = True
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.end()

    @asynccontextmanager
    async def subscription(self, task_id: str) -> AsyncIterator[Subscriber]:
        """Follow `task_id` until the block ends; raises TooManyStreams at the limit."""
        if self._streams >= self._max_streams:
            raise TooManyStreams(f"{self._streams} event streams open in this process")
        subscriber = Subscriber(task_id)
        if self.draining:
            subscriber.end()
        followers = self._subscribers.setdefault(task_id, set())
        first = not followers
        followers.add(subscriber)
        self._streams += 1
        try:
            channel = events_channel(task_id)
            if first:
                await self._send("subscribe", channel)
            elif channel in self._confirmed:
                subscriber.confirmed.set()
            yield subscriber
        finally:
            self._streams -= 1
            followers.discard(subscriber)
            if not followers and self._subscribers.get(task_id) is followers:
                del self._subscribers[task_id]
                await self._send("unsubscribe", events_channel(task_id))

    async def _send(self, command: str, channel: str) -> None:
        # While the connection is down nothing is sent: the listener subscribes
        # to every followed task when it connects again.
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            await (pubsub.subscribe if command == "subscribe" else pubsub.unsubscribe)(channel)
        except (RedisError, OSError) as exc:
            log.info("event hub: %s %s not sent (%s)", command, channel, exc)

    async def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            self._pubsub = pubsub
            self._confirmed.clear()
            try:
                followed = [events_channel(task_id) for task_id in self._subscribers]
                await pubsub.subscribe(HUB_CHANNEL, *followed)
                async for message in pubsub.listen():
                    self._dispatch(message)
            except (RedisError, OSError) as exc:
                log.warning("event hub: not hearing task events (%s); resubscribing", exc)
            finally:
                self._pubsub = None
                self.listening = False
                with suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RESUBSCRIBE_PAUSE_SECONDS)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], str(message["channel"])
        if channel == HUB_CHANNEL:
            self.listening = kind == "subscribe"
            return
        task_id = channel.removeprefix(EVENTS_PREFIX)
        if kind == "unsubscribe":
            self._confirmed.discard(channel)
            return
        followers = self._subscribers.get(task_id)
        if kind == "subscribe":
            self._confirmed.add(channel)
            # The first confirmation lets a stream read the record; a later one
            # (a reconnection) means changes may have been missed: read again.
            for subscriber in followers or ():
                subscriber.confirmed.set()
                subscriber.ask_resync()
            return
        if kind != "message" or not followers:
            return
        try:
            snapshot = Snapshot.of_record(task_id, record_of_message(str(message["data"])))
        except (ValueError, KeyError) as exc:
            log.warning("event hub: unreadable event on %s: %s", channel, exc)
            return
        for subscriber in followers:
            subscriber.deliver(snapshot)


def drain_all() -> None:
    """End the open streams of every hub of this process (the worker is stopping)."""
    for hub in list(_HUBS):
        hub.drain()
