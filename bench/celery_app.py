"""The Celery side of the benchmark: the same no-op and 10 ms tasks on a Redis broker (BENCH_REDIS_URL)."""

from __future__ import annotations

import os

import redis
from celery import Celery

from bench import tasks

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0"))
app.conf.update(
    task_ignore_result=True,  # the RQ and collector jobs' results are not what is measured either
    task_default_queue="bench",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop() -> None:
    tasks.noop()


@app.task(name="bench.sleep10")
def sleep10() -> None:
    tasks.sleep10()


_done: list[redis.Redis] = []  # this process's connection for counting ended GET tasks


@app.task(name="bench.http_wait")
def http_wait(url: str) -> None:
    """The GET, then one INCR of `bench:done` (the benchmark counts ended tasks, as collector's metrics do)."""
    tasks.http_wait(url)
    if not _done:
        _done.append(redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]))
    _done[0].incr("bench:done")
