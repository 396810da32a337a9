"""Logging: one line per event tagged with job and platform, as text or JSON.

`setup(config)` configures the root logger from COLLECTOR_LOG_LEVEL and COLLECTOR_LOG_FORMAT (`text` or
`json`: one JSON object per line). The lines a platform writes through `ctx.log` also go to its job's events
stream: `store.events.keep_platform_logs`.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from collector.config import Config
from collector.errors import ConfigError
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
