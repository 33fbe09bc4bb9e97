"""The grants the redis role gives the app's ACL user cover every command the
service sends: its status store (creates with quotas and a key's claim, progress,
outcomes, cancels, releases) and key revocations (published and heard), run on
the real Redis as a user with exactly the role's grants (roles/redis/defaults).

The test Redis's default user may run anything, so without this a command the
code gains and the role lacks shows only on a deployed host.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import yaml

from app.access import KeyCache
from app.events import EventHub
from app.keys import REVOKED_CHANNEL
from app.redis_client import async_client, sync_client
from app.schemas import TaskState
from app.settings import Settings
from app.status import (
    AsyncStatusStore,
    Claimed,
    Created,
    NewRecord,
    OverQuota,
    Quotas,
    SyncStatusStore,
)

ROLE_DEFAULTS = Path(__file__).resolve().parents[2] / "roles/redis/defaults/main.yml"
TASK = "app.tasks.process_data"


@pytest.fixture
def app_user_settings(app_env: dict[str, str], redis_client: redis.Redis) -> Iterator[Settings]:
    """Settings whose Redis URL names a user with the role's grants, and nothing more."""
    role = yaml.safe_load(ROLE_DEFAULTS.read_text())
    name, password = f"grants-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    rules = [
        "on",
        f">{password}",
        "resetkeys",
        f"~{role['redis_app_key_pattern']}",
        "resetchannels",
        f"&{role['redis_app_channel_pattern']}",
        "-@all",
        *(f"+{command}" for command in role["redis_app_commands"]),
    ]
    redis_client.execute_command("ACL", "SETUSER", name, *rules)
    url = urlsplit(app_env["APP_REDIS_URL"])
    netloc = f"{name}:{password}@{url.hostname}:{url.port}"
    saved = dict(os.environ)
    os.environ.update(app_env)
    os.environ["APP_REDIS_URL"] = urlunsplit(url._replace(netloc=netloc))
    try:
        yield Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        redis_client.execute_command("ACL", "DELUSER", name)


async def test_the_status_store_runs_on_the_roles_grants(app_user_settings: Settings) -> None:
    client = async_client(app_user_settings)
    store = AsyncStatusStore(client, 3600, 3600, Quotas(rate=100, burst=100, in_flight_cost=10))
    owner = f"grants-{uuid.uuid4().hex[:6]}"
    first = NewRecord(str(uuid.uuid4()), TASK, 5, owner, 5, ("key-1", "fingerprint"))
    second = NewRecord(str(uuid.uuid4()), TASK, 4, owner, 4, None)
    dear = NewRecord(str(uuid.uuid4()), TASK, 6, owner, 6, None)
    try:
        assert await store.create_many([first, second]) == [Created(), Created()]
        again = NewRecord(str(uuid.uuid4()), TASK, 5, owner, 5, ("key-1", "fingerprint"))
        assert await store.create_many([again]) == [Claimed(first.task_id, "fingerprint")]
        refused = await store.create_many([dear])
        assert refused == [OverQuota("in-flight", None)]
        await store.discard_many([second])
        assert await store.request_cancel(first.task_id) == "OK"
        cancelled = await store.get(first.task_id)
        assert cancelled is not None
        assert cancelled.status == TaskState.REVOKED
    finally:
        await client.aclose()

    worker = SyncStatusStore(sync_client(app_user_settings), 3600, 600)
    assert worker.update(dear.task_id, status=TaskState.PROGRESS.value, current=1) == "OK"
    assert worker.settle(dear.task_id, TaskState.SUCCESS, current=6) == "OK"
    assert worker.owner(first.task_id) == owner
    worker.outcome_stored(dear.task_id)
    done = worker.get(dear.task_id)
    assert done is not None
    assert done.status == TaskState.SUCCESS


async def test_key_revocations_are_published_and_heard_on_the_roles_grants(
    app_user_settings: Settings,
) -> None:
    listener_client = async_client(app_user_settings)
    cache = KeyCache(store=None, redis=listener_client, ttl=60)  # type: ignore[arg-type]
    listening = asyncio.create_task(cache.listen())
    publisher = async_client(app_user_settings)
    try:
        for _ in range(50):
            if cache.listening:
                break
            await asyncio.sleep(0.1)
        assert cache.listening, "the revocations channel could not be subscribed to"
        assert await publisher.publish(REVOKED_CHANNEL, "0123456789abcdef") >= 1
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await publisher.aclose()
        await listener_client.aclose()


async def test_task_events_are_published_and_heard_on_the_roles_grants(
    app_user_settings: Settings,
) -> None:
    """The status script's HINCRBY and PUBLISH, and the event hub's SUBSCRIBE."""
    hub = EventHub(async_client(app_user_settings), max_streams=10)
    hub.start()
    worker = SyncStatusStore(sync_client(app_user_settings), 3600, 600)
    task_id = str(uuid.uuid4())
    try:
        assert worker.update(task_id, status=TaskState.STARTED.value, current=0, total=2) == "OK"
        async with hub.subscription(task_id) as subscriber:
            await asyncio.wait_for(subscriber.confirmed.wait(), 5)
            await asyncio.to_thread(worker.settle, task_id, TaskState.SUCCESS, current=2)
            heard = None
            for _ in range(5):
                await subscriber.wait(1)
                heard = heard or subscriber.take()
            assert heard is not None, "no event heard"
            assert (heard.seq, heard.status.status) == (2, TaskState.SUCCESS)
    finally:
        await hub.close()
