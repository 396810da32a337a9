"""Periodic work every pool supervisor does between reaping children: fire due schedules, advance processes,
settle waiting jobs (time out stale waits, queue parents whose children ended), tend concurrency caps (slots of jobs
no longer running given back, parked jobs woken), send due webhook notifications (bounded: NOTIFY_TIMEOUT_S per
delivery, none started after NOTIFY_BUDGET_S), notice a Redis data loss."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from collector import defaults
from collector.config import Config
from collector.specs.registry import Registry
from collector.store.dataloss import LossWatch
from collector.store.records import Keys
from collector.submit.submitter import Submitter
from collector.workflows.caps import Caps
from collector.workflows.delivery import deliver_due
from collector.workflows.processes import Processes
from collector.workflows.schedules import Schedules
from collector.workflows.waiting import sweep

log = logging.getLogger(__name__)


class Maintenance:
    """Runs each task at most once per `interval_s`; a failing task is logged and tried again next time."""

    def __init__(self, *, connection: redis.Redis, config: Config, registry: Registry,
                 interval_s: float = defaults.MAINTENANCE_INTERVAL_S) -> None:
        self.submitter = Submitter(connection=connection, config=config, registry=registry)
        self.interval_s = interval_s
        self._next = 0.0
        self.tasks: list[tuple[str, Callable[[], object]]] = [
            ("schedules", Schedules(self.submitter).fire_due),
            ("processes", Processes(self.submitter).advance_all),
            ("waits", lambda: sweep(connection, config)),
            ("concurrency caps", Caps(connection=connection, config=config, registry=registry).tend),
            ("notifications", lambda: deliver_due(connection, config)),
            ("data loss", LossWatch(connection, Keys(config.key_prefix), redis_url=config.redis_where).check),
        ]

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        for name, task in self.tasks:
            try:
                task()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("maintenance %s skipped: Redis unreachable (%s)", name, type(exc).__name__)
                return
            except Exception:
                log.exception("maintenance %s failed", name)
