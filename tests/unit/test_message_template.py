"""The publisher's message template gives the bytes Celery's own as_task_v2 gives."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.utils.json import dumps

from app.celery_app import IMPORT_TASK, PROCESS_TASK
from app.publisher import TaskPublisher
from app.settings import Settings


@pytest.mark.parametrize(
    ("name", "args"),
    [
        (PROCESS_TASK, ['quotes " and \\ and é, ✓', 10]),
        (IMPORT_TASK, ["external_id,name\n1,a\n", "items.csv"]),
    ],
)
def test_a_templated_message_equals_celerys_own(name: str, args: list[Any]) -> None:
    publisher = TaskPublisher.from_settings(Settings(env="test"))
    celery = publisher._celery
    for task_id in ("0b0e1c5e-0000-4000-8000-000000000001", "second-id"):
        message = publisher.message(task_id, name, args)
        own = celery.amqp.as_task_v2(
            task_id,
            name,
            args=tuple(args),
            kwargs={},
            origin=publisher._origin,
            argsrepr=f"<{len(args)} args>",
            kwargsrepr="{}",
        )
        assert message.headers == own.headers
        assert message.body == dumps(own.body).encode()
        assert message.correlation_id == task_id
