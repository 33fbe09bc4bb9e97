from __future__ import annotations

import pytest

from app.work import (
    MAX_REPORTED_ITEMS,
    CsvFormatError,
    ImportRow,
    ProcessAccumulator,
    Rejected,
    check_csv_header,
    count_data_rows,
    process_step,
    validate_rows,
)


def test_process_step_is_deterministic_and_depends_on_inputs() -> None:
    assert process_step(b"data", 1, 10) == process_step(b"data", 1, 10)
    assert process_step(b"data", 1, 10) != process_step(b"data", 2, 10)
    assert process_step(b"data", 1, 10) != process_step(b"other", 1, 10)
    assert len(process_step(b"data", 1, 10)) == 16


def test_accumulator_bounds_the_reported_items() -> None:
    acc = ProcessAccumulator(total=500)
    for step in range(500):
        acc.add(process_step(b"x", step, 1))
    result = acc.result("x")
    assert result["total"] == 500
    assert len(result["processed_items"]) == MAX_REPORTED_ITEMS
    assert len(result["digest"]) == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("id,title\n", "external_id, name"), ("external_id\n", "name")],
)
def test_header_must_name_the_required_columns(text: str, message: str) -> None:
    with pytest.raises(CsvFormatError, match=message):
        check_csv_header(text)


def test_header_accepts_extra_spaces_and_optional_columns() -> None:
    assert check_csv_header(" external_id , name ,description\n") == [
        "external_id",
        "name",
        "description",
    ]


def test_rows_are_validated_with_line_numbers_and_reasons() -> None:
    text = (
        "external_id,name,description\n"
        "a1,Alpha,first\n"  # 2 ok
        "a2,,x\n"  # 3 empty name
        ",Nameless,\n"  # 4 empty id
        "a1,Again,\n"  # 5 repeats row 2
        "a3,Gamma\n"  # 6 ok without description
        "a4,Delta,x,extra\n"  # 7 too many fields
        '"a5","Multi\nline",d\n'  # 8-9 quoted newline, ok
        "a6," + "n" * 201 + ",\n"  # 10 name too long
        "\n"  # blank line: skipped
         + "b" * 101 + ",Long id,\n"  # 12 id too long
    )
    entries = list(validate_rows(text))
    valid = [e for e in entries if isinstance(e, ImportRow)]
    rejected = {e.row: e.reason for e in entries if isinstance(e, Rejected)}
    assert [(r.row, r.external_id) for r in valid] == [(2, "a1"), (6, "a3"), (9, "a5")]
    assert valid[1].description is None
    assert valid[2].name == "Multi\nline"
    assert rejected == {
        3: "name is empty",
        4: "external_id is empty",
        5: "external_id repeats row 2",
        7: "more fields than the header has columns",
        10: "name is longer than 200 characters",
        12: "external_id is longer than 100 characters",
    }
    assert count_data_rows(text) == 9


def test_short_rows_fill_optional_fields_but_still_need_a_name() -> None:
    entries = list(validate_rows("external_id,name,description\na1\na2,Beta\n"))
    assert entries == [Rejected(2, "name is empty"), ImportRow(3, "a2", "Beta", None)]
