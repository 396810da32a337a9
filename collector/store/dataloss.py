"""Redis data loss made visible: a run id collector writes once and checks; its key gone means Redis lost its data.

The first process to look (a pool's maintenance tick, each second; the API's diagnostics, metrics or a job not
found) on a Redis writes the run key (`collector:run`: a random id and when it was written;
no TTL). Every process remembers the id it saw; when a later look finds the key gone, Redis lost its data
(restarted without persistence, flushed, failed over to an empty replica). The first process to notice writes a
new run key and a loss entry (`collector:data-losses`, lost run id → when noticed) in one transaction, and logs
it once at ERROR; the others adopt the new run. Records of jobs created before the loss and gone since are then
told apart from ids that never existed by the time their ids carry (`types.new_job_id`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import redis
from redis import Redis
from redis.client import Pipeline

from collector.masking import mask_url
from collector.store.records import Keys, run_watched
from collector.types import iso, job_id_time

log = logging.getLogger(__name__)

LOSSES_KEPT = 20  # loss entries kept; older ones are dropped when a new one is written


def persistence(connection: Redis) -> bool | None:
    """Whether Redis keeps its data on disk (RDB save points or AOF); None when it cannot tell (CONFIG is
    disabled or renamed, as on managed services, and INFO says AOF is off)."""
    try:
        save = connection.config_get("save").get("save", "")
        appendonly = connection.config_get("appendonly").get("appendonly", "no")
        return bool(str(save).strip()) or str(appendonly).lower() == "yes"
    except redis.ResponseError:
        pass
    try:
        info = connection.info("persistence")
    except redis.ResponseError:
        return None
    return True if str(info.get("aof_enabled", "0")) == "1" else None


class LossWatch:
    """One process's watch on the run key: `check()` notices a loss, `report()` and `lost_job()` tell about it."""

    def __init__(self, connection: Redis, keys: Keys, *, redis_url: str | None = None) -> None:
        self.connection = connection
        self.keys = keys
        self.redis_url = redis_url
        self.known: str | None = None  # the run id this process last saw
        self.persistence_checked = False
        self._lock = threading.Lock()

    def check(self, *, write: bool = True) -> None:
        """Look at the run key (one round trip while it is there): adopt it, write it on a first start, or notice
        and record that it is gone; with `write` off, only adopt it (start-up writes nothing). The first
        successful look also warns once when Redis keeps nothing on disk."""
        with self._lock:
            seen = self.connection.hget(self.keys.run(), "id")
            if seen is None and write:
                seen = run_watched(self.connection, self._start_run)
            if seen is not None:
                self.known = seen.decode() if isinstance(seen, bytes) else seen
            if not self.persistence_checked:
                self.persistence_checked = True
                self._warn_if_volatile()

    def check_quietly(self) -> None:
        """`check(write=False)`, for start-up: a Redis not reachable yet is looked at by the next `check()`."""
        try:
            self.check(write=False)
        except redis.RedisError as exc:
            log.debug("Redis data-loss check skipped: %s", type(exc).__name__)

    def _start_run(self, pipe: Pipeline) -> str:
        """Write a new run key unless another process just did; with a loss entry when this process knew a run."""
        pipe.watch(self.keys.run())
        current = pipe.hget(self.keys.run(), "id")
        if current is not None:
            pipe.unwatch()
            return current.decode() if isinstance(current, bytes) else current
        now = time.time()
        run_id = uuid.uuid4().hex
        pipe.multi()
        pipe.hset(self.keys.run(), mapping={"id": run_id, "started_at": iso(now)})
        loss = None
        if self.known is not None:
            loss = {"lost_run": self.known, "noticed_at": iso(now), "noticed_ts": now, "new_run": run_id}
            pipe.hset(self.keys.losses(), self.known, json.dumps(loss))
        pipe.execute()
        if loss is not None:
            self._trim()
            log.error(
                "Redis at %s lost its data: the run key %s written by run %s is gone (Redis restarted without "
                "persistence, was flushed, or failed over to an empty replica). Records, queued jobs and datasets "
                "written before now are lost; GET of a lost job answers 410 job_lost. Turn on AOF or RDB "
                "persistence in Redis to keep data over restarts.",
                self._where(), self.keys.run(), self.known, extra={"event": "redis_data_loss"},
            )
        return run_id

    def _trim(self) -> None:
        entries = self.losses()
        if len(entries) > LOSSES_KEPT:
            self.connection.hdel(self.keys.losses(), *[e["lost_run"] for e in entries[:-LOSSES_KEPT]])

    def _warn_if_volatile(self) -> None:
        kept = persistence(self.connection)
        if kept is False and self.connection.exists(self.keys.volatile_by_design()):
            log.info("Redis at %s keeps no data on disk, as `collector up`'s embedded Redis does by design",
                     self._where())
        elif kept is False:
            log.warning(
                "Redis at %s keeps no data on disk (CONFIG save is empty, appendonly is no): a restart of Redis "
                "loses every job record, queued job and dataset. Turn on AOF (appendonly yes) or RDB save points.",
                self._where(), extra={"event": "redis_not_persistent"},
            )
        elif kept is None:
            log.info("could not tell whether Redis at %s keeps its data on disk (CONFIG is not allowed)",
                     self._where())

    def _where(self) -> str:
        return mask_url(self.redis_url or "the configured Redis")

    def losses(self) -> list[dict[str, Any]]:
        """Every loss noticed (and not itself lost), oldest first."""
        raw = self.connection.hvals(self.keys.losses())
        return sorted((json.loads(value) for value in raw), key=lambda e: e.get("noticed_ts", 0))

    def report(self) -> dict[str, Any]:
        """What `POST /system/alive` shows under `data_loss`: whether a loss was noticed, and when."""
        self.check()
        entries = self.losses()
        body: dict[str, Any] = {"detected": bool(entries), "run": self.known}
        if entries:
            body["noticed_at"] = entries[-1]["noticed_at"]
            body["losses"] = [{"noticed_at": e["noticed_at"], "lost_run": e["lost_run"]} for e in entries]
        return body

    def lost_job(self, job_id: str, *, kept_s: int) -> dict[str, Any] | None:
        """The loss that took job `job_id`'s record, when its id says it was created before a loss noticed since,
        and recently enough (`kept_s`: how long any record is kept) that its record could not have expired."""
        created = job_id_time(job_id)
        if created is None or time.time() - created > kept_s:
            return None
        self.check()
        for entry in self.losses():
            if created < entry["noticed_ts"]:
                return entry
        return None


def volatile_by_design(connection: Redis, keys: Keys) -> None:
    """Say that this Redis keeps nothing on disk on purpose (`collector up`'s embedded one, which lives and dies
    with the service): its processes do not warn about it."""
    connection.set(keys.volatile_by_design(), "collector up")
