"""`queuesvc`: the command-line client of the API (console script; README: "Command-line client").

    queuesvc submit --data TEXT --iterations N [--wait]
    queuesvc import FILE.csv [--wait]
    queuesvc status ID | watch ID | cancel ID | result ID

`--wait` and `watch` follow the task's event stream with a progress bar, then
print the result. Errors are one line on stderr; the exit code says what kind
(app.cli_http.Exit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from app import __version__
from app.cli_http import Api, CliError, Exit, verify_option

DEFAULT_URL = "http://127.0.0.1:8000"
FAILED_STATES = frozenset({"FAILURE", "REVOKED"})


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)", Exit.USAGE)


def _connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # Given before or after the command; only the top level sets defaults, so
    # a subcommand's copy does not overwrite a value given before it.
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        default=default(os.environ.get("QUEUESVC_URL", DEFAULT_URL)),
        help=f"the API's base URL (env QUEUESVC_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=default(os.environ.get("QUEUESVC_API_KEY")),
        help="the API key, qsk_… (env QUEUESVC_API_KEY)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--ca", default=default(None), metavar="FILE", help="trust this CA certificate (PEM)"
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        default=default(False),
        help="do not check the server's certificate",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable output: one JSON document on stdout",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(15.0),
        help="seconds to wait for an answer (default 15)",
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="queuesvc",
        description="Submit and follow queuesvc tasks.",
        epilog="Exit codes: 0 success, 1 task failed or was cancelled, 2 usage or a request "
        "the API refused, 3 unreachable or a server error, 4 authentication (401/403).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _connection_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _connection_options(sub, defaults=False)
        return sub

    submit = command("submit", "queue a processing task")
    submit.add_argument("--data", required=True, help="the text to process")
    submit.add_argument("--iterations", required=True, type=int, help="steps of work, 1..10000")
    submit.add_argument("--wait", action="store_true", help="follow it to the end")
    upload = command("import", "queue a CSV import of items (external_id,name[,description])")
    upload.add_argument("file", metavar="FILE.csv", type=Path)
    upload.add_argument("--wait", action="store_true", help="follow it to the end")
    for name, help in (
        ("status", "show a task's state now"),
        ("watch", "follow a task to its end with a progress bar, then show its result"),
        ("cancel", "cancel a pending or running task"),
        ("result", "show a finished task's result"),
    ):
        command(name, help).add_argument("task_id", metavar="ID")
    return parser


class Output:
    """What the user sees: human text with a live bar on a terminal, or JSON."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def document(self, body: dict[str, Any], human: Callable[[], None]) -> None:
        if self.as_json:
            print(json.dumps(body, separators=(",", ":")), flush=True)
        else:
            human()

    def status_line(self, status: dict[str, Any]) -> None:
        progress = status.get("progress") or {}
        line = f"{status['task_id']}  {status['status']}"
        if progress.get("total"):
            line += f"  {progress['progress']}% ({progress['current']}/{progress['total']})"
        if status.get("error"):
            line += f"  error: {status['error']}"
        self.out.print(line)

    def result(self, body: dict[str, Any]) -> None:
        self.status_line(body if "progress" in body else {**body, "progress": {}})
        if body.get("result") is not None:
            self.out.print_json(data=body["result"])


def follow(api: Api, output: Output, task_id: str) -> Exit:
    """Follow a task to its end (a live bar on a terminal); print and rate its outcome."""
    if output.as_json or not output.err.is_terminal:
        # No terminal to draw on (a pipe, a log): the outcome only.
        final = api.follow(task_id, lambda _status: None)
    else:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=output.err, transient=False) as bar:
            row = bar.add_task(task_id[:8], total=None)

            def show(status: dict[str, Any]) -> None:
                progress = status.get("progress") or {}
                total = progress.get("total") or None
                bar.update(
                    row,
                    total=total,
                    completed=progress.get("current", 0),
                    description=f"{task_id[:8]} {status['status']}",
                )

            final = api.follow(task_id, show)
    output.document(final, lambda: output.result(final))
    return _rated(final)


def _rated(body: dict[str, Any]) -> Exit:
    return Exit.TASK_FAILED if body.get("status") in FAILED_STATES else Exit.OK


def run(args: argparse.Namespace, output: Output) -> Exit:
    if not args.api_key:
        raise CliError("no API key: give --api-key or set QUEUESVC_API_KEY", Exit.USAGE)
    verify = verify_option(args.ca, args.insecure)
    api = Api(args.url, args.api_key, verify, args.timeout)
    try:
        return _command(api, args, output)
    finally:
        api.close()


def _command(api: Api, args: argparse.Namespace, output: Output) -> Exit:
    if args.command in ("submit", "import"):
        if args.command == "submit":
            body = {"data": args.data, "iterations": args.iterations}
            submitted = api.request("POST", "/api/async/process", json=body)
        else:
            submitted = api.request("POST", "/api/async/import", files=_csv_part(args.file))
        if args.wait:
            if not output.as_json:
                output.err.print(f"submitted {submitted['task_id']}")
            return follow(api, output, submitted["task_id"])
        output.document(submitted, lambda: output.out.print(submitted["task_id"]))
        return Exit.OK
    task_id = args.task_id
    if args.command == "watch":
        return follow(api, output, task_id)
    if args.command == "status":
        status = api.request("GET", f"/api/async/status/{task_id}")
        output.document(status, lambda: output.status_line(status))
        return Exit.OK
    if args.command == "cancel":
        cancelled = api.request("DELETE", f"/api/async/{task_id}")
        output.document(cancelled, lambda: output.status_line(cancelled))
        return Exit.OK
    result = api.request("GET", f"/api/async/result/{task_id}")
    output.document(result, lambda: output.result(result))
    return _rated(result)


def _csv_part(path: Path) -> dict[str, tuple[str, bytes, str]]:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", Exit.USAGE) from None
    return {"file": (path.name, content, "text/csv")}


def main(argv: Sequence[str] | None = None) -> int:
    output = Output(as_json=False)
    try:
        args = build_parser().parse_args(argv)
        output = Output(as_json=args.json)
        return int(run(args, output))
    except CliError as exc:
        output.err.print(f"queuesvc: {exc}", markup=False)
        return int(exc.code)
    except KeyboardInterrupt:
        output.err.print("queuesvc: interrupted", markup=False)
        return 130
    except Exception as exc:  # never a traceback: one line, as for the other errors
        output.err.print(f"queuesvc: unexpected error: {exc!r}", markup=False)
        return int(Exit.UNREACHABLE)


if __name__ == "__main__":
    sys.exit(main())
