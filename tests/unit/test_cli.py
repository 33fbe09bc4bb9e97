"""The command-line client's pure parts: arguments, exit codes, the console script."""

from __future__ import annotations

import tomllib
from pathlib import Path

import httpx
import pytest

from app import cli
from app.cli_http import CliError, Exit, check

REPO = Path(__file__).resolve().parents[2]


def test_the_console_script_is_the_cli() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["queuesvc"] == "app.cli:main"
    assert {"httpx", "rich"} <= {dep.split(">")[0].split("<")[0] for dep in project["dependencies"]}


def test_connection_options_go_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    before = parser.parse_args(["--url", "http://a", "--json", "status", "x"])
    after = parser.parse_args(["status", "x", "--url", "http://a", "--json"])
    for args in (before, after):
        assert (args.url, args.json, args.task_id) == ("http://a", True, "x")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["submit", "--data", "x"],
        ["submit", "--data", "x", "--iterations", "many"],
        ["status"],
        ["frobnicate", "x"],
        ["status", "x", "--ca", "a.pem", "--insecure"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == Exit.USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("queuesvc: ")
    assert len(err.splitlines()) == 1, err


def test_no_api_key_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("QUEUESVC_API_KEY", raising=False)
    assert cli.main(["status", "x"]) == Exit.USAGE
    assert "API key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, Exit.AUTH),
        (403, Exit.AUTH),
        (404, Exit.USAGE),
        (409, Exit.USAGE),
        (500, Exit.UNREACHABLE),
        (503, Exit.UNREACHABLE),
    ],
)
def test_error_answers_map_to_exit_codes(status: int, code: Exit) -> None:
    response = httpx.Response(status, json={"detail": "why"})
    with pytest.raises(CliError) as raised:
        check(response)
    assert raised.value.code == code
    assert "why" in str(raised.value)


def test_a_success_answer_is_no_error() -> None:
    check(httpx.Response(200, json={}))
