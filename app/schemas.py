"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


# Stripped of surrounding whitespace by Python's str.strip (the same whitespace
# as the schema's pattern in Python, which Schemathesis generates with); the
# pattern, one non-space character, says a name of whitespace only is refused.
Name = Annotated[
    str,
    BeforeValidator(_strip),
    StringConstraints(min_length=1, max_length=200),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"}),
]
Description = Annotated[str, StringConstraints(max_length=2000)]


class StrictBody(BaseModel):
    """Request bodies reject fields they do not know."""

    model_config = ConfigDict(extra="forbid")


class ItemCreate(StrictBody):
    name: Name
    description: Description | None = None


class ItemUpdate(StrictBody):
    # The schema says what the check below does: at least one field.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # Absent keeps the name; an item always has one, so null is not in the schema
    # (and is refused with 422 by the check below). A null description clears it.
    name: Name | SkipJsonSchema[None] = None
    description: Description | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> ItemUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one of: name, description")
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null")
        return self


class Item(BaseModel):
    id: str
    name: str
    description: str | None = None
    external_id: str | None = None
    created_at: datetime
    updated_at: datetime


# An item id: what `next_cursor` holds, and all `cursor` takes.
CURSOR_PATTERN = "^[0-9a-fA-F]{24}$"


class ItemPage(BaseModel):
    items: list[Item]
    next_cursor: str | None = Field(
        default=None,
        pattern=CURSOR_PATTERN,
        description="Pass as `cursor` to get the next page; null on the last page.",
    )


class ProcessRequest(StrictBody):
    data: str = Field(max_length=100_000)
    iterations: int = Field(ge=1, le=10_000)


class TaskState(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    RETRY = "RETRY"
    REVOKED = "REVOKED"


TERMINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED})


class TaskSubmitted(BaseModel):
    task_id: str
    status: TaskState = TaskState.PENDING


class Progress(BaseModel):
    current: int
    total: int
    progress: int = Field(description="Percent done, 0..100.")


class TaskStatus(BaseModel):
    task_id: str
    name: str | None = None
    status: TaskState
    progress: Progress
    retries: int = 0
    worker: str | None = Field(default=None, description="The Celery worker that ran it.")
    result: Any | None = None
    error: str | None = None
    # When the record last changed: what /result reports as finished_at while the
    # outcome is in Redis only; not part of the status body.
    updated_at: datetime | None = Field(default=None, exclude=True)
    # The key owner that submitted it (app.access): who may see it; not in the body.
    owner: str | None = Field(default=None, exclude=True)


class TaskResult(BaseModel):
    task_id: str
    name: str | None = None
    status: TaskState
    worker: str | None = None
    result: Any | None = None
    error: str | None = None
    finished_at: datetime


class HealthReport(BaseModel):
    status: str = Field(description="healthy or unhealthy")
    services: dict[str, str] = Field(description="Each dependency: connected or disconnected.")
    errors: dict[str, str] | None = Field(
        default=None, description="Why each disconnected one is; absent when healthy."
    )


class ErrorBody(BaseModel):
    """Our own errors; validation errors (422) are FastAPI's list of errors."""

    detail: str


class DeadLetter(BaseModel):
    task_id: str
    task: str = Field(description="The task's name; empty when the message was not a task.")
    queue: str = Field(description="The queue it was dead-lettered from.")
    reason: str = Field(description="RabbitMQ's reason: delivery_limit, rejected, ...")
    error: str
    replayable: bool = Field(description="Whether POST .../replay can submit it again.")
    replayed_as: str | None = Field(default=None, description="The task id of its replay.")
    dead_at: datetime


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    total: int


class TaskReplayed(TaskSubmitted):
    replay_of: str
