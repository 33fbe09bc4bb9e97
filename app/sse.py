"""Server-Sent Events on the wire: writing events (the API) and reading them (the CLI).

Only what the task event stream uses: `id`, `event` and one-line `data` fields,
and comment lines as heartbeats (https://html.spec.whatwg.org/#server-sent-events).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MEDIA_TYPE = "text/event-stream"
# A comment line: ignored by every client, but it keeps idle proxies from closing.
HEARTBEAT = b": ping\n\n"


def encode(event: str, data: str, event_id: int | None = None) -> bytes:
    """One event; `data` must be one line (JSON without newlines)."""
    if "\n" in data or "\r" in data:
        raise ValueError("an event's data must be one line")
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None = None


class Parser:
    """Reads events from a stream's lines, fed one at a time (without their line ends)."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> Event | None:
        """The event this line completes (a blank line ends one), else None."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None

    def _dispatch(self) -> Event | None:
        if self._id is not None:
            self.last_id = self._id
        event = Event(self._event or "message", "\n".join(self._data), self._id)
        complete = bool(self._data)
        self._event, self._data, self._id = "", [], None
        return event if complete else None


def parse(lines: Iterable[str]) -> Iterator[Event]:
    parser = Parser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
