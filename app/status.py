"""Task status records in Redis, shared by the API (asyncio) and the workers (sync).

One hash per task, written at submit time so an unknown id can be told from a
pending one (Celery's own result backend answers PENDING for both). Writes go
through a Lua script that never moves a task out of a final state: the first
final state written (a result, a failure or a cancellation) is the task's one
outcome, a check-and-set in a single step, and a late progress report cannot
overwrite it. Once MongoDB holds the outcome, the record's TTL is shortened.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from app.schemas import TERMINAL_STATES, Progress, TaskState, TaskStatus

KEY_PREFIX = "queuesvc:task:"
# Each task's changes are published on EVENTS_PREFIX + its id (app.events).
EVENTS_PREFIX = "queuesvc:events:"
IDEMPOTENCY_PREFIX = "queuesvc:idempotency:"
RATE_PREFIX = "queuesvc:quota:rate:"
IN_FLIGHT_PREFIX = "queuesvc:quota:in-flight:"

# KEYS[1]: the task's hash. ARGV[1]: TTL in seconds. ARGV[2]: "1" to create a
# missing record. ARGV[3]: the prefix of the owners' in-flight totals.
# ARGV[4]: the task's events channel. ARGV[5..]: field/value pairs. Returns "OK"
# when written, the final state that refused the write, or "MISSING". The write
# that makes the state final takes the task's cost off its owner's in-flight
# total (the key is built here, not passed: one Redis server, not a cluster).
# Every write counts up the record's `seq` and publishes the whole record on
# the channel, in the same step: an event stream (app.events) sees each change
# once, numbered, without reading Redis itself.
_UPDATE_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED' then
  return status
end
if not status and ARGV[2] ~= '1' then
  return 'MISSING'
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[4], cjson.encode(redis.call('HGETALL', KEYS[1])))
local now = redis.call('HGET', KEYS[1], 'status')
if now == 'SUCCESS' or now == 'FAILURE' or now == 'REVOKED' then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  local cost = tonumber(redis.call('HGET', KEYS[1], 'cost') or '0')
  local total = owner and (ARGV[3] .. owner)
  if total and cost > 0 and redis.call('EXISTS', total) == 1
     and redis.call('DECRBY', total, cost) < 0 then
    redis.call('SET', total, 0, 'KEEPTTL')
  end
end
return 'OK'
"""

# KEYS[1]: an owner's in-flight total; ARGV[1]: the cost to take off it.
_RELEASE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('DECRBY', KEYS[1], ARGV[1]) < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
end
return 'OK'
"""


# KEYS[1]: the task's hash; KEYS[2]: the owner's submit-rate bucket; KEYS[3]:
# the owner's in-flight cost; KEYS[4], if given: the Idempotency-Key's claim.
# ARGV[1]: the record's TTL; ARGV[2]: the claim's TTL; ARGV[3]: the claim
# ("<task id> <fingerprint>"); ARGV[4]: submits per second; ARGV[5]: the burst;
# ARGV[6]: the in-flight cost cap; ARGV[7]: this task's cost; ARGV[8..]:
# field/value pairs. Returns "OK" when created; the claim an earlier request
# holds; "!rate <seconds until a submit is allowed>"; or "!in-flight". Only
# "OK" creates anything (a replay spends no quota).
_CREATE_SCRIPT = """
if KEYS[4] then
  local held = redis.call('GET', KEYS[4])
  if held then
    return held
  end
end
local cost, cap = tonumber(ARGV[7]), tonumber(ARGV[6])
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
-- A task dearer than the cap alone may still run, when nothing else is in flight.
if used > 0 and used + cost > cap then
  return '!in-flight'
end
local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[2], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local last = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
if tokens < 1 then
  return '!rate ' .. string.format('%.3f', (1 - tokens) / rate)
end
redis.call('HSET', KEYS[2], 'tokens', string.format('%.6f', tokens - 1),
           'at', string.format('%.6f', now))
redis.call('EXPIRE', KEYS[2], math.ceil(burst / rate) + 1)
redis.call('INCRBY', KEYS[3], cost)
redis.call('EXPIRE', KEYS[3], ARGV[1])
if KEYS[4] then
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 'OK'
"""


def task_key(task_id: str) -> str:
    return KEY_PREFIX + task_id


def events_channel(task_id: str) -> str:
    return EVENTS_PREFIX + task_id


def claim_key(owner: str, idempotency_key: str) -> str:
    """Keys are the owner's own: two tenants may use the same key."""
    return f"{IDEMPOTENCY_PREFIX}{owner}:{idempotency_key}"


def _flatten(fields: Mapping[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        if name in ("result",):
            value = json.dumps(value, separators=(",", ":"))
        flat += [name, str(value)]
    flat += ["updated_at", f"{time.time():.3f}"]
    return flat


def decode(task_id: str, raw: Mapping[str, str]) -> TaskStatus:
    """Build the API's view of a record read with HGETALL."""
    current = int(raw.get("current", 0))
    total = int(raw.get("total", 0))
    percent = min(100, current * 100 // total) if total else 0
    result = json.loads(raw["result"]) if raw.get("result") else None
    return TaskStatus(
        task_id=task_id,
        name=raw.get("name") or None,
        status=TaskState(raw.get("status", TaskState.PENDING)),
        progress=Progress(current=current, total=total, progress=percent),
        retries=int(raw.get("retries", 0)),
        worker=raw.get("worker") or None,
        result=result,
        error=raw.get("error") or None,
        updated_at=_timestamp(raw.get("updated_at")),
        owner=raw.get("owner") or None,
    )


def _timestamp(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


FINAL_STATE_NAMES = frozenset(state.value for state in TERMINAL_STATES)


def is_final(outcome: str) -> bool:
    """Whether an update's outcome names the final state that refused it."""
    return outcome in FINAL_STATE_NAMES


@dataclass(frozen=True)
class NewRecord:
    """A record to create for `owner`, whose quotas `cost` counts against;
    `claim` is (Idempotency-Key, request fingerprint) or None."""

    task_id: str
    name: str
    total: int
    owner: str
    cost: int
    claim: tuple[str, str] | None = None


@dataclass(frozen=True)
class Quotas:
    """Per owner: submits per second with a burst, and the in-flight cost cap."""

    rate: float
    burst: int
    in_flight_cost: int


@dataclass(frozen=True)
class Created:
    """The record was created (and the key, if any, claimed for it)."""


@dataclass(frozen=True)
class Claimed:
    """An earlier request holds the Idempotency-Key: its task and fingerprint."""

    task_id: str
    fingerprint: str


@dataclass(frozen=True)
class OverQuota:
    """Nothing was created: the owner is over its submit rate ("rate", with the
    seconds until the next submit may pass) or its in-flight cost ("in-flight")."""

    kind: str
    retry_after: float | None = None


class AsyncStatusStore:
    """The API's side: create at submit (in batches), read, cancel."""

    def __init__(
        self, client: aioredis.Redis, ttl_seconds: int, claim_ttl_seconds: int, quotas: Quotas
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._claim_ttl = claim_ttl_seconds
        self.quotas = quotas
        self._update = client.register_script(_UPDATE_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._create_sha = hashlib.sha1(_CREATE_SCRIPT.encode(), usedforsecurity=False).hexdigest()

    async def create_many(
        self, records: list[NewRecord]
    ) -> list[Created | Claimed | OverQuota | Exception]:
        """Create the records in one round trip; per record, what happened.

        A record that could not be written (Redis out of memory, say) gets its
        error; a connection failure raises for all of them.
        """
        outcomes = await self._run_creates(records)
        if any(isinstance(o, NoScriptError) for o in outcomes):
            # Redis restarted or flushed its scripts: nothing ran; load and redo.
            await self._client.script_load(_CREATE_SCRIPT)
            outcomes = await self._run_creates(records)
        return [_created(outcome) for outcome in outcomes]

    async def _run_creates(self, records: list[NewRecord]) -> list[Any]:
        submitted = f"{time.time():.3f}"
        async with self._client.pipeline(transaction=False) as pipe:
            for record in records:
                fields = _flatten(
                    {
                        "name": record.name,
                        "status": TaskState.PENDING.value,
                        "current": 0,
                        "total": record.total,
                        "retries": 0,
                        "submitted_at": submitted,
                        "owner": record.owner,
                        "cost": record.cost,
                    }
                )
                keys = [
                    task_key(record.task_id),
                    RATE_PREFIX + record.owner,
                    IN_FLIGHT_PREFIX + record.owner,
                ]
                claim = ""
                if record.claim is not None:
                    key, fingerprint = record.claim
                    keys.append(claim_key(record.owner, key))
                    claim = f"{record.task_id} {fingerprint}"
                quotas = self.quotas
                pipe.evalsha(
                    self._create_sha,
                    len(keys),
                    *keys,
                    self._ttl,
                    self._claim_ttl,
                    claim,
                    quotas.rate,
                    quotas.burst,
                    quotas.in_flight_cost,
                    record.cost,
                    *fields,
                )
            return await pipe.execute(raise_on_error=False)

    async def discard_many(self, records: list[NewRecord]) -> None:
        """Forget records whose tasks could not be published, their keys' claims,
        and their cost in their owners' in-flight totals."""
        async with self._client.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.delete(task_key(record.task_id))
                await self._release(
                    keys=[IN_FLIGHT_PREFIX + record.owner], args=[record.cost], client=pipe
                )
                if record.claim is not None:
                    pipe.delete(claim_key(record.owner, record.claim[0]))
            await pipe.execute()

    async def get(self, task_id: str) -> TaskStatus | None:
        raw = await self.get_raw(task_id)
        return decode(task_id, raw) if raw else None

    async def get_raw(self, task_id: str) -> dict[str, str]:
        """The record as stored (empty when there is none), `seq` included."""
        return cast("dict[str, str]", await self._client.hgetall(task_key(task_id)))

    async def request_cancel(self, task_id: str) -> str:
        """Mark a task REVOKED; returns "OK", "MISSING" or the final state it already had."""
        outcome = await self._update(
            keys=[task_key(task_id)],
            args=[
                self._ttl,
                "0",
                IN_FLIGHT_PREFIX,
                events_channel(task_id),
                *_flatten({"status": TaskState.REVOKED.value, "error": "cancelled"}),
            ],
        )
        return str(outcome)


def _created(outcome: Any) -> Created | Claimed | OverQuota | Exception:
    if isinstance(outcome, Exception):
        return outcome
    if outcome == "OK":
        return Created()
    if outcome.startswith("!"):
        kind, _, seconds = outcome[1:].partition(" ")
        return OverQuota(kind, float(seconds) if seconds else None)
    task_id, _, fingerprint = str(outcome).partition(" ")
    return Claimed(task_id, fingerprint)


class SyncStatusStore:
    """The worker's side: state transitions and progress, recreated if Redis lost them."""

    def __init__(self, client: redis.Redis, ttl_seconds: int, final_ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._final_ttl = final_ttl_seconds
        self._update = client.register_script(_UPDATE_SCRIPT)

    def update(self, task_id: str, **fields: Any) -> str:
        """Write a live state or progress; returns "OK" or the final state that refused it."""
        outcome = self._update(
            keys=[task_key(task_id)],
            args=[self._ttl, "1", IN_FLIGHT_PREFIX, events_channel(task_id), *_flatten(fields)],
        )
        return str(outcome)

    def settle(self, task_id: str, state: TaskState, **fields: Any) -> str:
        """Claim `state` as the task's outcome: "OK", or the outcome claimed before."""
        outcome = self._update(
            keys=[task_key(task_id)],
            args=[
                self._ttl,
                "1",
                IN_FLIGHT_PREFIX,
                events_channel(task_id),
                *_flatten({"status": state.value, **fields}),
            ],
        )
        return str(outcome)

    def owner(self, task_id: str) -> str | None:
        """Who submitted the task (None when its record is gone or predates owners)."""
        return cast("str | None", self._client.hget(task_key(task_id), "owner"))

    def outcome_stored(self, task_id: str) -> None:
        """Once MongoDB holds the outcome, the record need only outlive the last polls."""
        self._client.expire(task_key(task_id), self._final_ttl)

    def get(self, task_id: str) -> TaskStatus | None:
        raw = cast("dict[str, str]", self._client.hgetall(task_key(task_id)))
        return decode(task_id, raw) if raw else None
