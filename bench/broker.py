"""The benchmark's own dealings with RabbitMQ through kombu: the raw
publish-and-consume rate of the broker (the ceiling any task pipeline on it
has), a queue's consumers, its depth sampled over time, and purging or
deleting the queues it made."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Consumer, Exchange, Producer, Queue

CONNECT_TIMEOUT_S = 10
DRAIN_TIMEOUT_S = 10


@dataclass(frozen=True)
class RawRate:
    messages: int
    publish_seconds: float
    consume_seconds: float

    @property
    def rate(self) -> float:
        """Messages published and then consumed, per second of both phases."""
        return self.messages / (self.publish_seconds + self.consume_seconds)


def raw_rate(url: str, messages: int, prefetch: int, queue_arguments: dict[str, Any]) -> RawRate:
    """Publish `messages` small persistent messages to a throwaway queue (no
    publisher confirms), then consume and ack each with `prefetch` unacked at
    most; the queue is deleted at the end."""
    name = f"queuesvc-bench-raw-{os.getpid()}"
    queue = Queue(
        name, Exchange(""), routing_key=name, durable=True, queue_arguments=queue_arguments
    )
    body = {"data": "benchmark payload", "iterations": 1}
    with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
        channel: Any = connection.channel()
        try:
            queue(channel).declare()
            producer = Producer(channel, routing_key=name, serializer="json")
            started = time.perf_counter()
            for _ in range(messages):
                producer.publish(body, delivery_mode=2)
            published = time.perf_counter()
            consumed = 0

            def ack(_body: Any, message: Any) -> None:
                nonlocal consumed
                message.ack()
                consumed += 1

            with Consumer(channel, [queue], callbacks=[ack], prefetch_count=prefetch):
                while consumed < messages:
                    connection.drain_events(timeout=DRAIN_TIMEOUT_S)
            done = time.perf_counter()
        finally:
            channel.queue_delete(name)
    return RawRate(messages, published - started, done - published)


def consumers(url: str, queue: str) -> int | None:
    """Consumers on `queue` now; None when it does not exist."""
    with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
        channel: Any = connection.channel()
        try:
            declared = channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:
            return None
        return int(declared.consumer_count)


class DepthSampler(threading.Thread):
    """The ready messages of `queue` every `interval_s` seconds until stop(),
    by passive declares on one connection (no management plugin, no CLI);
    0 while the queue does not exist."""

    def __init__(self, url: str, queue: str, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url, self.queue, self.interval_s = url, queue, interval_s
        self.depths: list[int] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        with Connection(self.url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
            channel: Any = connection.channel()
            while not self._stopping.wait(self.interval_s):
                try:
                    declared = channel.queue_declare(queue=self.queue, passive=True)
                    self.depths.append(int(declared.message_count))
                except connection.channel_errors:  # not declared yet: closes the channel
                    self.depths.append(0)
                    channel = connection.channel()

    def stop(self) -> list[int]:
        self._stopping.set()
        self.join()
        return self.depths


def empty_queues(url: str, queues: Iterable[str]) -> None:
    """Empty the queues, keeping them: their publishers declared them once and
    do not again, so a deleted queue would silently swallow the next messages
    (no queue, no disk write: a faster, wrong figure)."""
    with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
        for queue in queues:
            # A fresh channel each: a missing queue closes the channel.
            channel: Any = connection.channel()
            with suppress(*connection.channel_errors):  # never declared: nothing in it
                channel.queue_purge(queue)


def delete_queue(url: str, queue: str) -> None:
    with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
        channel: Any = connection.channel()
        channel.queue_delete(queue)
