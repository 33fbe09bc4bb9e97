from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.schemas import ItemCreate, ItemUpdate, ProcessRequest
from app.status import decode


def test_item_name_is_trimmed_and_bounded() -> None:
    assert ItemCreate(name="  lamp ").name == "lamp"
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(ValidationError):
            ItemCreate(name=bad)
    assert len(ItemCreate(name="x" * 200).name) == 200


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ItemCreate.model_validate({"name": "a", "price": 3})
    with pytest.raises(ValidationError, match="extra"):
        ProcessRequest.model_validate({"data": "a", "iterations": 1, "priority": 9})


def test_update_needs_a_field_and_a_non_null_name() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        ItemUpdate()
    with pytest.raises(ValidationError, match="cannot be null"):
        ItemUpdate(name=None)
    assert ItemUpdate(description=None).model_fields_set == {"description"}


@pytest.mark.parametrize("iterations", [0, -1, 10_001, 10**9])
def test_iterations_are_bounded(iterations: int) -> None:
    with pytest.raises(ValidationError):
        ProcessRequest(data="x", iterations=iterations)


def test_status_record_decodes_with_percent_progress() -> None:
    status = decode(
        "t1",
        {
            "status": "PROGRESS",
            "current": "50",
            "total": "200",
            "name": "app.tasks.process_data",
            "retries": "1",
        },
    )
    assert status.progress.model_dump() == {"current": 50, "total": 200, "progress": 25}
    assert status.retries == 1
    assert status.result is None
    done = decode(
        "t2", {"status": "SUCCESS", "current": "3", "total": "3", "result": '{"total": 3}'}
    )
    assert done.progress.progress == 100
    assert done.result == {"total": 3}
