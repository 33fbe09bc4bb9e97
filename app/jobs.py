"""The tasks themselves: the processing task and the CSV import.

Their life around the work (status, the one recorded outcome, retries) is
app.lifecycle's; they call `begin`, `report` and `finish`. They are shared
tasks: each Celery app built by app.celery_app.create_celery gets them, with
the retries and time limits its settings give them (`task_options`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from pymongo import UpdateOne

from app import db
from app.celery_app import IMPORT_TASK, PROCESS_TASK
from app.lifecycle import TrackedTask, clients
from app.settings import get_settings
from app.work import (
    MAX_REPORTED_REJECTS,
    ImportRow,
    ProcessAccumulator,
    Rejected,
    count_data_rows,
    process_step,
    validate_rows,
)


@shared_task(bind=True, base=TrackedTask, name=PROCESS_TASK)
def process_data(self: TrackedTask, data: str, iterations: int) -> dict[str, Any]:
    """Run `iterations` steps of work over `data`, reporting progress."""
    rounds = get_settings().process_rounds_per_iteration
    self.begin(iterations)
    payload = data.encode()
    accumulator = ProcessAccumulator(total=iterations)
    for step in range(1, iterations + 1):
        accumulator.add(process_step(payload, step, rounds))
        self.report(step, iterations)
    return self.finish(accumulator.result(data), iterations)


@shared_task(bind=True, base=TrackedTask, name=IMPORT_TASK)
def import_items(
    self: TrackedTask, csv_text: str, filename: str = "", owner: str | None = None
) -> dict[str, Any]:
    """Upsert `owner`'s items from CSV text by external_id, in batches; report
    rejected rows. (Messages from before owners existed carry none: their items
    have no owner, which only an admin key sees.)"""
    settings = get_settings()
    total = count_data_rows(csv_text)
    self.begin(total)
    collection = clients.database[db.ITEMS]
    if not clients.indexes_ready:
        db.ensure_indexes_sync(clients.database)  # the upsert key must be unique
        clients.indexes_ready = True
    inserted = updated = done = 0
    rejected: list[dict[str, Any]] = []
    rejected_total = 0
    batch: list[ImportRow] = []

    def flush() -> None:
        nonlocal inserted, updated
        if not batch:
            return
        now = datetime.now(UTC)
        outcome = collection.bulk_write(
            [
                UpdateOne(
                    {"import_key": db.import_key(owner, row.external_id)},
                    {
                        "$set": {
                            "name": row.name,
                            "description": row.description,
                            "updated_at": now,
                        },
                        "$setOnInsert": {
                            "owner": owner,
                            "external_id": row.external_id,
                            "created_at": now,
                        },
                    },
                    upsert=True,
                )
                for row in batch
            ],
            ordered=False,
        )
        inserted += outcome.upserted_count
        updated += outcome.matched_count
        batch.clear()

    for entry in validate_rows(csv_text):
        done += 1
        if isinstance(entry, Rejected):
            rejected_total += 1
            if len(rejected) < MAX_REPORTED_REJECTS:
                rejected.append({"row": entry.row, "reason": entry.reason})
        else:
            batch.append(entry)
            if len(batch) >= settings.import_batch_size:
                flush()
                self.report(done, total, force=True)
        self.report(done, total)
    flush()
    result = {
        "inserted": inserted,
        "updated": updated,
        "rejected": rejected,
        "rejected_total": rejected_total,
        "rows": done,
        "filename": filename,
    }
    return self.finish(result, done)
