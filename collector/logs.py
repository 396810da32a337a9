"""Logging: one line per event tagged with job and platform, as text or JSON; platform log lines kept on the job.

`setup(config)` configures the root logger from COLLECTOR_LOG_LEVEL and COLLECTOR_LOG_FORMAT (`text` or
`json`: one JSON object per line). `keep_platform_logs(...)` makes the lines a platform writes through
`ctx.log` also go to the job's events stream `collector:job:<id>:events`, capped per job.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import redis

from collector import defaults
from collector.config import Config
from collector.errors import ConfigError
from collector.store.records import Keys
from collector.types import iso

FORMATS = ("text", "json")
# Attributes every LogRecord has; anything else on a record came from `extra=` and is worth showing.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# Fields shown first, in this order, when a record carries them.
_TAGS = ("job_id", "platform_id", "event")


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """What `extra=` put on a record: job_id, platform_id, event, ..."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then job_id/platform_id/event and other extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = extras(record)
        line.update({k: fields.pop(k) for k in _TAGS if k in fields})
        line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...` with the job's tags appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = extras(record)
        tags = [f"{k}={fields.pop(k)}" for k in _TAGS if k in fields]
        tags += [f"{k}={v}" for k, v in fields.items()]
        if not tags:
            return text
        head, newline, tail = text.partition("\n")  # keep a traceback below the tagged first line
        return f"{head} {' '.join(tags)}{newline}{tail}"


def setup(config: Config, *, stream: Any = None) -> None:
    """Configure the root logger once per process from the config."""
    if config.log_format not in FORMATS:
        raise ConfigError(f"COLLECTOR_LOG_FORMAT={config.log_format!r} is not one of {list(FORMATS)}; set text or json")
    level = config.log_level.upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"COLLECTOR_LOG_LEVEL={config.log_level!r} is not a level; use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if config.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def job_event(logger: logging.Logger, event: str, *, job_id: str, platform_id: str, **fields: Any) -> None:
    """Log one job event as one line tagged with the job and its platform."""
    logger.info("job %s", event, extra={"job_id": job_id, "platform_id": platform_id, "event": event, **fields})


def add_event(connection: redis.Redis | Any, keys: Keys, job_id: str, fields: dict[str, Any]) -> None:
    """Append one entry to a job's events stream, capped (approximately) at EVENTS_MAXLEN entries."""
    entry = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in fields.items()}
    connection.xadd(keys.events(job_id), entry, maxlen=defaults.EVENTS_MAXLEN, approximate=True)


class JobEventsHandler(logging.Handler):
    """Copies a platform's `ctx.log` lines to its job's events stream: at most `per_job` lines per job."""

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
