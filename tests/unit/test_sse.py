"""The event stream's wire format (app.sse) and the records it carries (app.events)."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from app import sse
from app.events import EventHub, Snapshot, Subscriber, TooManyStreams, record_of_message


def test_an_event_has_its_id_name_and_one_data_line() -> None:
    assert sse.encode("status", '{"a":1}', 7) == b'id: 7\nevent: status\ndata: {"a":1}\n\n'
    assert sse.encode("final", "{}") == b"event: final\ndata: {}\n\n"


def test_data_of_several_lines_is_refused() -> None:
    with pytest.raises(ValueError, match="one line"):
        sse.encode("status", "a\nb", 1)


def test_the_parser_reads_what_encode_writes_and_skips_comments() -> None:
    wire = (sse.encode("status", "{}", 1) + sse.HEARTBEAT + sse.encode("final", "[]", 2)).decode()
    events = list(sse.parse(wire.split("\n")))
    assert events == [sse.Event("status", "{}", "1"), sse.Event("final", "[]", "2")]


def test_the_parser_keeps_the_last_id_and_defaults_the_name() -> None:
    parser = sse.Parser()
    lines = ["id: 4", "data: x", "", "data: y", "data: z", "", ": ping", ""]
    events = [event for line in lines if (event := parser.feed(line)) is not None]
    assert events == [sse.Event("message", "x", "4"), sse.Event("message", "y\nz", None)]
    assert parser.last_id == "4"  # an event without an id keeps the last one


def test_a_published_record_decodes_to_a_numbered_snapshot() -> None:
    flat = ["status", "PROGRESS", "current", "3", "total", "4", "seq", "5", "owner", "acme"]
    snapshot = Snapshot.of_record("t-1", record_of_message(json.dumps(flat)))
    assert snapshot.seq == 5
    assert snapshot.status.progress.progress == 75
    assert not snapshot.final
    assert snapshot.newer_than(4)
    assert not snapshot.newer_than(5)
    assert snapshot.newer_than(None)


@pytest.mark.parametrize("payload", ['{"status": "x"}', '["status"]', "not json"])
def test_an_unreadable_message_is_refused(payload: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (json's and ours)
        record_of_message(payload)


def test_a_subscriber_keeps_only_the_newest_snapshot() -> None:
    def at(seq: int) -> Snapshot:
        return Snapshot.of_record("t", {"status": "PROGRESS", "seq": str(seq)})

    subscriber = Subscriber("t")
    subscriber.deliver(at(3))
    subscriber.deliver(at(2))  # older: a read overtaken by a message
    subscriber.deliver(at(4))
    latest = subscriber.take()
    assert latest is not None
    assert latest.seq == 4
    assert subscriber.take() is None


async def test_a_hub_counts_its_streams_and_refuses_past_its_limit() -> None:
    hub = EventHub(aioredis.Redis(), max_streams=1)  # not started: sends nothing to Redis
    async with hub.subscription("t") as subscriber:
        assert hub.streams == 1
        assert not subscriber.ended
        with pytest.raises(TooManyStreams):
            async with hub.subscription("u"):
                pass
    assert hub.streams == 0


async def test_a_draining_hub_ends_open_streams_and_new_ones() -> None:
    hub = EventHub(aioredis.Redis(), max_streams=10)
    async with hub.subscription("t") as open_before:
        hub.drain()
        assert open_before.ended
        async with hub.subscription("t") as opened_after:
            assert opened_after.ended
