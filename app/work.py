"""The work the tasks do, free of Celery and I/O so it can be unit-tested."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Result size stays bounded whatever the iteration count.
MAX_REPORTED_ITEMS = 100
REQUIRED_COLUMNS = ("external_id", "name")
OPTIONAL_COLUMNS = ("description",)
MAX_REPORTED_REJECTS = 1000


def process_step(data: bytes, step: int, rounds: int) -> str:
    """One step of real CPU work: a key derivation salted by the step number."""
    return hashlib.pbkdf2_hmac("sha256", data, step.to_bytes(4, "big"), rounds).hex()[:16]


@dataclass
class ProcessAccumulator:
    """Folds step digests into the task's result."""

    total: int
    items: list[str] = field(default_factory=list)
    chain: Any = field(default_factory=hashlib.sha256)

    def add(self, digest: str) -> None:
        if len(self.items) < MAX_REPORTED_ITEMS:
            self.items.append(digest)
        self.chain.update(digest.encode())

    def result(self, data: str) -> dict[str, Any]:
        return {
            "processed_items": self.items,
            "total": self.total,
            "digest": self.chain.hexdigest(),
            "input_length": len(data),
        }


class CsvFormatError(ValueError):
    """The upload is not a CSV file this import can read."""


def check_csv_header(text: str) -> list[str]:
    """Validate the header row; returns the column names."""
    try:
        header = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as exc:
        raise CsvFormatError(f"not a readable CSV file: {exc}") from exc
    if not header:
        raise CsvFormatError("the file is empty: expected a header row")
    columns = [name.strip() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise CsvFormatError(
            "missing required column(s): "
            + ", ".join(missing)
            + f" (the header must name {', '.join(REQUIRED_COLUMNS)}"
            + f"; optional: {', '.join(OPTIONAL_COLUMNS)})"
        )
    return columns


@dataclass(frozen=True)
class ImportRow:
    row: int
    external_id: str
    name: str
    description: str | None


@dataclass(frozen=True)
class Rejected:
    row: int
    reason: str


def validate_rows(text: str) -> Iterator[ImportRow | Rejected]:
    """Each data row as a valid ImportRow or a Rejected with its reason.

    Rows are numbered as lines of the file (the header is row 1). A repeated
    external id is rejected so one file cannot update an item twice.
    """
    # Missing trailing fields read as empty: an optional description may be left off.
    reader = csv.DictReader(io.StringIO(text), restkey="__extra__", restval="")
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    seen: dict[str, int] = {}
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Rejected(reader.line_num, f"unreadable row: {exc}")
            continue
        row = reader.line_num
        if "__extra__" in record:
            yield Rejected(row, "more fields than the header has columns")
            continue
        external_id = (record.get("external_id") or "").strip()
        name = (record.get("name") or "").strip()
        description = (record.get("description") or "").strip() or None
        if not external_id:
            yield Rejected(row, "external_id is empty")
        elif len(external_id) > 100:
            yield Rejected(row, "external_id is longer than 100 characters")
        elif not name:
            yield Rejected(row, "name is empty")
        elif len(name) > 200:
            yield Rejected(row, "name is longer than 200 characters")
        elif description is not None and len(description) > 2000:
            yield Rejected(row, "description is longer than 2000 characters")
        elif external_id in seen:
            yield Rejected(row, f"external_id repeats row {seen[external_id]}")
        else:
            seen[external_id] = row
            yield ImportRow(row, external_id, name, description)


def count_data_rows(text: str) -> int:
    """Data rows in the file (records, not lines: quoted fields may span lines)."""
    try:
        return max(0, sum(1 for record in csv.reader(io.StringIO(text)) if record) - 1)
    except csv.Error:
        return max(0, text.count("\n") - 1)
