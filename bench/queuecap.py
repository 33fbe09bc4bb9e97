"""A task queue's length cap as the rabbitmq role sets it, applied to a local
vhost: a policy with the role's limits (defaults/main.yml,
rabbitmq_queue_limits and rabbitmq_queue_limit_priority; a unit test holds
DEFAULT_QUEUE_CAP equal to them), pattern ^<queue>$, apply-to queues and
overflow reject-publish, as its tasks/policies.yml sets it, under a name of the
benchmark's own, and cleared afterwards."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from app.celery_app import DEFAULT_QUEUE

CTL_TIMEOUT_S = 60


@dataclass(frozen=True)
class QueueCap:
    queue: str
    max_length: int
    max_length_bytes: int
    priority: int

    @property
    def policy(self) -> str:
        return f"queuesvc-bench-limit-{self.queue}"

    def definition(self) -> dict[str, int | str]:
        return {
            "max-length": self.max_length,
            "max-length-bytes": self.max_length_bytes,
            "overflow": "reject-publish",
        }

    def describe(self) -> str:
        return (
            f"{self.max_length} messages or {self.max_length_bytes / 2**20:g} MiB, reject-publish"
        )


DEFAULT_QUEUE_CAP = QueueCap(DEFAULT_QUEUE, 100_000, 268_435_456, 10)


def vhost_of(url: str) -> str:
    """The vhost an amqp:// URL names ("/" when none)."""
    return unquote(urlsplit(url).path.removeprefix("/")) or "/"


def rabbitmqctl(ctl: str, *args: str) -> str:
    done = subprocess.run(
        [ctl, "-q", *args], check=True, timeout=CTL_TIMEOUT_S, capture_output=True, text=True
    )
    return done.stdout


def policy_of(listing: str, queue: str) -> str | None:
    """The policy in force on `queue` in `rabbitmqctl -q list_queues name
    policy`'s output ("" for none); None when the queue is not listed."""
    for line in listing.splitlines()[1:]:  # after the header
        name, _, policy = line.partition("\t")
        if name == queue:
            return policy.strip()
    return None


@contextmanager
def capped(cap: QueueCap, ctl: str, vhost: str) -> Iterator[str | None]:
    """The cap in force on `vhost` for the block: yields None, or why it could
    not be set (the block then runs without it)."""
    try:
        rabbitmqctl(
            ctl, "set_policy", "-p", vhost, "--apply-to", "queues",
            "--priority", str(cap.priority), cap.policy, f"^{re.escape(cap.queue)}$",
            json.dumps(cap.definition()),
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        said = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        yield f"{ctl} failed: {str(said).strip()}"
        return
    try:
        yield None
    finally:
        rabbitmqctl(ctl, "clear_policy", "-p", vhost, cap.policy)
