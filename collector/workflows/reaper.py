"""Pool heartbeats, and the reaper every pool and the API run: dead pools' jobs recovered, due retries requeued,
and the sweep for jobs nothing holds."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable

import redis

from collector import defaults
from collector.config import Config
from collector.store.records import Keys
from collector.store.rq import RQ
from collector.types import iso
from collector.workflows.recovery import enqueue_due, recover, recover_claims
from collector.workflows.sweep import Sweep

log = logging.getLogger(__name__)

# A pool is declared dead only when its heartbeat is missing on two looks this far apart: a Redis restarted
# from its AOF may hold already-expired heartbeats of pools that are alive and about to beat again.
CONFIRM_S = 2 * defaults.POOL_HEARTBEAT_S + 1


def beat(connection: redis.Redis, config: Config, pool: str, *, jobs: Iterable[str], workers: Iterable[str]) -> None:
    """Announce `pool` alive for `pool_heartbeat_ttl_s`, with the jobs it runs (one round trip)."""
    keys = Keys(config.key_prefix)
    value = json.dumps({"at": iso(), "jobs": sorted(jobs), "workers": sorted(workers)})
    with connection.pipeline(transaction=False) as pipe:
        pipe.set(keys.pool(pool), value, ex=config.pool_heartbeat_ttl_s)
        pipe.hsetnx(keys.pools(), pool, iso())
        pipe.execute()


def beat_child(connection: redis.Redis, config: Config, pool: str) -> None:
    """A living child of `pool` shows the pool alive for `pool_heartbeat_ttl_s` (a frozen supervisor is no dead
    pool while its children still run their jobs)."""
    connection.set(Keys(config.key_prefix).pool_children(pool), iso(), ex=config.pool_heartbeat_ttl_s)


def retire(connection: redis.Redis, config: Config, pool: str) -> None:
    """A pool that stops cleanly takes its heartbeat with it."""
    keys = Keys(config.key_prefix)
    with connection.pipeline(transaction=False) as pipe:
        pipe.delete(keys.pool(pool), keys.pool_children(pool))
        pipe.hdel(keys.pools(), pool)
        pipe.execute()


class Reaper:
    """Looks for pools whose heartbeat is gone and settles their jobs; requeues retries that are due."""

    def __init__(self, connection: redis.Redis, config: Config, *, own_pool: str | None = None) -> None:
        self.connection = connection
        self.config = config
        self.own_pool = own_pool
        self.keys = Keys(config.key_prefix)
        self.suspects: dict[str, float] = {}
        self._next_reap = 0.0
        self.rq = RQ(connection, config)
        self.sweep = Sweep(connection, config)

    def tick(self, *, now: float | None = None) -> None:
        """Requeue due retries (every call), and look for dead pools (every `reap_interval_s`)."""
        enqueue_due(self.connection, self.config)
        now = time.monotonic() if now is None else now
        if now < self._next_reap:
            return
        self._next_reap = now + self.config.reap_interval_s
        for pool in self.dead_pools(now):
            self.reap(pool)
        self.rq.prune_canceled()
        self.sweep.tick()

    def dead_pools(self, now: float) -> list[str]:
        names = [n.decode() for n in self.connection.hkeys(self.keys.pools()) if n.decode() != self.own_pool]
        if not names:
            self.suspects.clear()
            return []
        with self.connection.pipeline(transaction=False) as pipe:
            for name in names:  # dead only when neither the supervisor nor any of its children beats
                pipe.exists(self.keys.pool(name), self.keys.pool_children(name))
            alive = pipe.execute()
        missing = {name for name, ok in zip(names, alive, strict=True) if not ok}
        self.suspects = {n: t for n, t in self.suspects.items() if n in missing}
        for name in missing:
            self.suspects.setdefault(name, now)
        return [n for n in missing if now - self.suspects[n] >= CONFIRM_S]

    def reap(self, pool: str) -> None:
        """Settle every started job of a dead pool, unregister its workers, forget it."""
        job_ids = self.rq.started_job_ids()
        cause = (f"worker pool {pool} stopped: no heartbeat for over {self.config.pool_heartbeat_ttl_s} s "
                 "(killed with SIGKILL, out of memory, or its host went down)")
        if job_ids:
            with self.connection.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(self.keys.job(job_id), "pool")
                owners = pipe.execute()
            for job_id, owner in zip(job_ids, owners, strict=True):
                if owner is not None and owner.decode() == pool:
                    status = recover(self.connection, self.config, job_id, kind="died", cause=cause, pool=pool)
                    log.debug("job %s of dead pool %s: %s", job_id, pool, status or "already settled")
        for worker in self.rq.worker_names(pool):  # jobs its children had taken but not yet started
            for job_id, status in recover_claims(self.connection, self.config, worker, cause=cause).items():
                log.debug("job %s taken by %s of dead pool %s: %s", job_id, worker, pool, status or "already settled")
        self.rq.bury_workers(pool)
        self.connection.hdel(self.keys.pools(), pool)
        self.suspects.pop(pool, None)
        log.error("worker pool %s is gone; its jobs were recovered", pool)


class ReaperThread(threading.Thread):
    """The reaper in the API process: dead pools are noticed even when no other pool is alive."""

    def __init__(self, connection: redis.Redis, config: Config) -> None:
        super().__init__(name="collector-reaper", daemon=True)
        self.reaper = Reaper(connection, config)
        self.interval = max(0.2, min(config.reap_interval_s, defaults.POOL_HEARTBEAT_S))
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            try:
                self.reaper.tick()
            except redis.RedisError as exc:
                log.warning("reaper: Redis unreachable (%s); trying again", exc)
            except Exception:
                log.exception("reaper: unexpected error; trying again")

    def stop(self) -> None:
        self.halt.set()
        self.join(5)
