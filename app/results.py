"""Final outcomes in MongoDB: one document per task, and one per dead-lettered message.

Both are written with upserts whose fields are only set on insert, so the first
write of a task's outcome is the one kept: a retried or redelivered task cannot
store a second, different result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from app.db import DEAD_LETTERS, TASK_RESULTS
from app.schemas import TaskState


@dataclass(frozen=True)
class Outcome:
    """A task's final state and what goes with it, as Redis claims it and MongoDB keeps it."""

    name: str
    state: TaskState
    result: Any = None
    error: str | None = None
    retries: int = 0
    worker: str = ""
    owner: str | None = None  # the key owner that submitted it: who may read it


class ResultStore:
    """The workers' side (sync PyMongo)."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self._results = database[TASK_RESULTS]
        self._dead = database[DEAD_LETTERS]

    def store(self, task_id: str, outcome: Outcome) -> None:
        """Keep the task's outcome; a no-op when one is already stored."""
        self._results.update_one(
            {"_id": task_id},
            {
                "$setOnInsert": {
                    "name": outcome.name,
                    "status": outcome.state.value,
                    "result": outcome.result,
                    "error": outcome.error,
                    "retries": outcome.retries,
                    "worker": outcome.worker,
                    "owner": outcome.owner,
                    "finished_at": datetime.now(UTC),
                }
            },
            upsert=True,
        )

    def store_dead(self, task_id: str, letter: dict[str, Any]) -> None:
        """Keep a dead-lettered message for `GET /api/async/dead` and replay."""
        self._dead.update_one(
            {"_id": task_id},
            {"$setOnInsert": {**letter, "dead_at": datetime.now(UTC)}},
            upsert=True,
        )
