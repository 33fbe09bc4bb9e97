"""Publishing task messages to RabbitMQ from the event loop, without blocking it.

Celery's own publisher is synchronous. The API builds each task message in
Celery's protocol 2 (so any Celery worker reads it) and publishes it with
aio-pika over one connection per process, with publisher confirms and
``mandatory``: a publish returns once RabbitMQ has routed and taken the message.
The parts of a message that are the same for every task of a name come from
one call to Celery's ``as_task_v2`` (MessageTemplate); a publish fills in the
task id and the arguments.

Load and outage are told apart. Reaching RabbitMQ (connect, channel,
declarations) is bounded by APP_PUBLISH_CONNECT_TIMEOUT_SECONDS per attempt
and the attempts by APP_PUBLISH_MAX_RETRIES: a broker that is down fails fast
(BrokerUnavailable). Once a message is sent, its confirm is awaited up to
APP_PUBLISH_CONFIRM_TIMEOUT_SECONDS; at most APP_PUBLISH_MAX_IN_FLIGHT
publishes await theirs, and the next waits for a slot within the same bound.
A publish that runs out of that time while the connection is up is load
(BrokerBusy): the connection is kept, since dropping it would fail every
other publish in flight. A broker that is gone shows as a closed connection
(a socket error, or missed AMQP heartbeats), and only that is
BrokerUnavailable. A message RabbitMQ refuses (a nack: its queue is at the
length limit the rabbitmq role sets) is QueueFull.

`ping` is /health's probe of RabbitMQ: a round trip on this same connection
(connecting, and so logging in, when it is down), never a new one per call.

The status records and the batching of submits are app.group_commit's.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import socket
from contextlib import suppress
from functools import partial
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from celery import Celery
from kombu import Queue
from kombu.compression import compress
from kombu.exceptions import OperationalError
from kombu.utils.json import dumps

from app.celery_app import create_celery, dead_letter_queue
from app.settings import Settings

log = logging.getLogger(__name__)
RETRY_PAUSE_SECONDS = 0.25


class BrokerUnavailable(Exception):
    """The task could not be handed to RabbitMQ: it is down or unreachable."""


class BrokerBusy(Exception):
    """RabbitMQ is up, but did not take the task in time: load, not an outage."""


class QueueFull(Exception):
    """RabbitMQ refused the task (a nack): its queue is at its length limit
    (the max-length policy with reject-publish overflow, set by the rabbitmq role)."""


class MessageTemplate:
    """One task name's protocol-2 message, built once by Celery's ``as_task_v2``:
    a message differs from the next only in its id and its arguments."""

    def __init__(self, celery: Celery, name: str, origin: str) -> None:
        task = celery.amqp.as_task_v2(
            "template", name, args=(), kwargs={}, origin=origin, kwargsrepr="{}"
        )
        self.headers: dict[str, Any] = dict(task.headers)
        args, kwargs, embed = task.body
        if args or kwargs:
            raise ValueError(f"unexpected template body for {name}: {task.body!r}")
        # The body is [args, kwargs, embed]; only args change.
        self._body_tail = ", " + dumps(kwargs) + ", " + dumps(embed) + "]"

    def render(self, task_id: str, args: list[Any]) -> tuple[dict[str, Any], bytes]:
        # Only these headers differ between messages; the rest are the template's.
        headers = copy.copy(self.headers)
        headers["id"] = headers["root_id"] = task_id
        headers["argsrepr"] = f"<{len(args)} args>"
        body = "[" + json.dumps(args, separators=(", ", ": ")) + self._body_tail
        return headers, body.encode()


class TaskPublisher:
    def __init__(
        self,
        celery: Celery,
        *,
        url: str,
        connect_timeout: float,
        confirm_timeout: float,
        max_retries: int,
        max_in_flight: int,
    ) -> None:
        self._celery = celery
        self._queues: tuple[Queue, ...] = tuple(celery.conf.task_queues)
        self._url = url
        self._connect_timeout = connect_timeout
        self._confirm_timeout = confirm_timeout
        self._attempts = max_retries + 1
        self._max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight = 0  # slots taken; cheaper to read than Semaphore.locked()
        self._origin = f"queuesvc-api@{socket.gethostname()}"
        self._templates: dict[str, MessageTemplate] = {}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TaskPublisher:
        """The API's publisher, bounded by the APP_PUBLISH_* settings."""
        return cls(
            create_celery(settings),
            url=settings.broker_url.get_secret_value(),
            connect_timeout=settings.publish_connect_timeout_seconds,
            confirm_timeout=settings.publish_confirm_timeout_seconds,
            max_retries=settings.publish_max_retries,
            max_in_flight=settings.publish_max_in_flight,
        )

    def message(
        self, task_id: str, name: str, args: list[Any], compression: str | None = None
    ) -> aio_pika.Message:
        """The task's message, as Celery's own ``apply_async`` would send it."""
        template = self._templates.get(name)
        if template is None:
            template = self._templates[name] = MessageTemplate(self._celery, name, self._origin)
        headers, body = template.render(task_id, args)
        if compression:
            body, headers["compression"] = compress(body, compression)
        return aio_pika.Message(
            body,
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=task_id,
            message_id=task_id,  # else aiormq draws a random one per message
        )

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        """Publish and await RabbitMQ's confirm: BrokerBusy or BrokerUnavailable if not."""
        try:
            if self._in_flight < self._max_in_flight:
                await self._slots.acquire()  # a free slot: no timer needed
            else:
                async with asyncio.timeout(self._confirm_timeout):
                    await self._slots.acquire()
        except TimeoutError:
            waited = f"no publish slot within {self._confirm_timeout:g} s"
            if self._connected():
                busy = f"{waited}: all {self._max_in_flight} await their confirm"
                raise BrokerBusy(busy) from None
            raise BrokerUnavailable(f"{waited}, and the connection is down") from None
        self._in_flight += 1
        try:
            await self._publish_with_retries(message, routing_key)
        finally:
            self._in_flight -= 1
            self._slots.release()

    def _connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def _publish_with_retries(self, message: aio_pika.Message, routing_key: str) -> None:
        last_error: BaseException | None = None
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
            try:
                exchange = await self._ready_exchange()
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPException) as exc:
                last_error = exc
                await self._drop_connection()
                continue
            try:
                async with asyncio.timeout(self._confirm_timeout):
                    await exchange.publish(message, routing_key=routing_key, mandatory=True)
            except TimeoutError:
                if self._connected():
                    raise BrokerBusy(
                        f"no confirm within {self._confirm_timeout:g} s on a live connection"
                    ) from None
                last_error = TimeoutError("the connection closed while awaiting the confirm")
                await self._drop_connection()
                continue
            except aio_pika.exceptions.PublishError as exc:
                # Returned (mandatory): no queue is bound for it, so one was deleted
                # under this process. Declare them again on the channel; retry.
                last_error = exc
                await self._redeclare()
                continue
            except aio_pika.exceptions.DeliveryError as exc:
                # Nacked: the queue is at its length limit (reject-publish), or, rarely,
                # an internal error of the queue; a retry now would be refused too.
                raise QueueFull(f"RabbitMQ refused the message: {exc}") from None
            except (
                OSError,
                aio_pika.exceptions.AMQPException,
                aio_pika.exceptions.ChannelInvalidStateError,
            ) as exc:
                last_error = exc
                await self._drop_connection()
                continue
            return
        raise BrokerUnavailable(f"{last_error.__class__.__name__}: {last_error}")

    async def ping(self) -> None:
        """A round trip to RabbitMQ on the publisher's connection: connects (a login
        with the credentials and vhost) when it is down, then declares the task
        exchange passively. Raises what connecting or the round trip raised."""
        exchange = await self._ready_exchange()
        channel = self._channel
        if channel is None or channel.is_closed:
            raise aio_pika.exceptions.ChannelInvalidStateError("the channel closed")
        await channel.get_exchange(exchange.name, ensure=True)

    async def _ready_exchange(self) -> AbstractExchange:
        if self._exchange is not None and self._channel is not None and not self._channel.is_closed:
            return self._exchange
        async with self._connecting:
            if self._exchange is None or self._channel is None or self._channel.is_closed:
                await self._drop_connection()
                async with asyncio.timeout(self._connect_timeout):
                    self._connection = await aio_pika.connect(
                        self._url,
                        timeout=self._connect_timeout,
                        client_properties={"connection_name": self._origin},
                    )
                    # on_return_raises: an unroutable message fails its publish;
                    # by default aio-pika confirms it and RabbitMQ drops it.
                    self._channel = await self._connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    self._exchange = await self._declare(self._channel)
            return self._exchange

    async def _redeclare(self) -> None:
        """Declare the queues again on the open channel (reconnect if that fails)."""
        try:
            async with self._connecting, asyncio.timeout(self._connect_timeout):
                if self._channel is not None and not self._channel.is_closed:
                    self._exchange = await self._declare(self._channel)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPException):
            await self._drop_connection()

    async def _declare(self, channel: AbstractChannel) -> AbstractExchange:
        """Declare the dead-letter queue and the workers' queues (app.celery_app, the
        same arguments), so a message is never routed to nowhere before a worker
        has started; returns the task exchange."""
        await self._declare_queue(channel, dead_letter_queue())
        exchanges = [await self._declare_queue(channel, queue) for queue in self._queues]
        return exchanges[0]

    @staticmethod
    async def _declare_queue(channel: AbstractChannel, queue: Queue) -> AbstractExchange:
        exchange = await channel.declare_exchange(
            queue.exchange.name, aio_pika.ExchangeType(queue.exchange.type), durable=True
        )
        declared = await channel.declare_queue(
            queue.name, durable=True, arguments=queue.queue_arguments
        )
        await declared.bind(exchange, routing_key=queue.routing_key or "")
        return exchange

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            with suppress(Exception):
                await asyncio.wait_for(connection.close(), self._connect_timeout)

    async def broadcast_revoke(self, task_id: str) -> None:
        """Ask every worker to drop the task if it is still queued (best effort)."""
        revoke = partial(self._celery.control.revoke, task_id)
        # Failure is fine: the REVOKED status record alone stops the task when it starts.
        with suppress(OperationalError, OSError):
            await asyncio.to_thread(revoke)

    async def close(self) -> None:
        await self._drop_connection()
