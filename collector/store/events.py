"""The lines a platform logs through `ctx.log`, kept on its job's events list (`collector:job:<id>:events:list`),
capped per job."""

from __future__ import annotations

import logging
from typing import Any

import redis

from collector import defaults
from collector.store.records import Keys, Lease, push_event
from collector.types import iso


def add_event(connection: redis.Redis | Any, keys: Keys, job_id: str, fields: dict[str, Any]) -> None:
    """Append one entry to a job's events list, capped at EVENTS_MAXLEN entries."""
    with connection.pipeline(transaction=False) as pipe:
        push_event(pipe, keys, job_id, fields)
        pipe.execute()


class JobEventsHandler(logging.Handler):
    """Copies a platform's `ctx.log` lines to its job's events list: at most `per_job` lines per job. While a
    job runs, `lease` is its attempt's: its lines are written only while the attempt holds it."""

    lease: Lease | None = None

    def __init__(self, connection: redis.Redis, keys: Keys, *, per_job: int = defaults.LOG_EVENTS_PER_JOB) -> None:
        super().__init__()
        self.connection = connection
        self.keys = keys
        self.per_job = per_job
        self._job: str | None = None
        self._written = 0

    def emit(self, record: logging.LogRecord) -> None:
        job_id = getattr(record, "job_id", None)
        if not job_id:
            return
        if job_id != self._job:  # a worker runs one job at a time: a new id starts a new count
            self._job, self._written = job_id, 0
        self._written += 1
        if self._written > self.per_job + 1:
            return
        if self._written == self.per_job + 1:
            fields = {"type": "log", "level": "WARNING", "at": iso(),
                      "message": f"more than {self.per_job} log lines: later ones are in the worker's log only"}
        else:
            fields = {"type": "log", "level": record.levelname, "at": iso(), "message": record.getMessage()}
        try:
            lease = self.lease
            if lease is not None and lease.job_id == job_id:
                lease.write(lambda pipe: push_event(pipe, self.keys, job_id, fields))
            else:
                add_event(self.connection, self.keys, job_id, fields)
        except redis.RedisError:
            self.handleError(record)


def keep_platform_logs(connection: redis.Redis, keys: Keys, *, logger_name: str = "platforms") -> JobEventsHandler:
    """Attach (once per process; a later call replaces the earlier) the events handler to the platforms' logger."""
    logger = logging.getLogger(logger_name)
    for old in [h for h in logger.handlers if isinstance(h, JobEventsHandler)]:
        logger.removeHandler(old)
    handler = JobEventsHandler(connection, keys)
    logger.addHandler(handler)
    return handler
