"""The peer: the tutorial pattern for FastAPI + Celery, written minimally.

`POST /api/async/process` takes the same body as the service's and calls the
task's ``.delay(data, iterations)`` from an ``async def`` route: Celery's own
synchronous publish on the event loop, no publisher confirms, no status record,
no result backend, no middleware. It is the naive pattern that the service's
submit path (status record in Redis, then a confirmed publish to a quorum queue,
on the event loop without blocking it) must beat on requests/s and on p99.

The task routes to its own queue, `queuesvc-bench-peer` (a classic durable queue,
Celery's default kind), so it never feeds the service's workers; no worker
consumes it, and bench/run.py purges it between runs and deletes it at the end.
Served by bench/run.py with the service's gunicorn settings (2 workers); the
broker URL comes from APP_BROKER_URL.
"""

from __future__ import annotations

import os

from celery import Celery
from fastapi import FastAPI
from pydantic import BaseModel

PEER_QUEUE = "queuesvc-bench-peer"
PEER_TASK = "bench.peer.process_data"

celery = Celery("queuesvc-bench-peer", broker=os.environ.get("APP_BROKER_URL"))
celery.conf.update(task_default_queue=PEER_QUEUE, task_ignore_result=True)


@celery.task(name=PEER_TASK)
def process_data(data: str, iterations: int) -> None:
    """Never run here: nothing consumes the peer's queue."""


class ProcessRequest(BaseModel):
    data: str
    iterations: int


app = FastAPI()


@app.post("/api/async/process", status_code=202)
async def submit(body: ProcessRequest) -> dict[str, str]:
    result = process_data.delay(body.data, body.iterations)
    return {"task_id": result.id}
