"""The sweep the reaper runs: jobs `queued` or `started` that nothing holds are found and settled, whatever was lost.

A job not yet ended is always somewhere: waiting in the queue, in a pool child's claims (taken off the queue, not yet
started), in a live pool's slots (running), in the scheduled registry, or run by a process that claimed it
(`collector run --from-job`, which renews a beat while it runs). One that is in none of them (its worker and
the supervisor that should have settled it were lost, or someone emptied the queue) is found on one sweep and settled
on the next, if its record did not move meanwhile: a `queued` one goes back to the head of the queue, a `started`
one is retried or failed as after a worker's death, with the cause, through `ends.py`. One process sweeps at a time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from typing import Any

import redis

from collector import defaults
from collector.config import Config
from collector.store import index
from collector.store.records import ENDED, Keys, decode_fields
from collector.store.rq import RQ
from collector.workflows.recovery import FINGERPRINT, recover

log = logging.getLogger(__name__)

SWEPT = ("queued", "started")
FIELDS = ("status", "pool", *[name for name in FINGERPRINT if name != "status"])


@dataclasses.dataclass
class Held:
    """What holds jobs now: ids in the queue, in live children's claims, in live pools' slots; and the pools that
    are registered but silent (their jobs are the pool reaper's to settle)."""

    waiting: set[str]
    running: set[str]
    silent: set[str]


class Sweep:
    """Finds open jobs held by nothing and settles them once confirmed on a second sweep."""

    def __init__(self, connection: redis.Redis, config: Config) -> None:
        self.connection = connection
        self.config = config
        self.keys = Keys(config.key_prefix)
        self.rq = RQ(connection, config)
        self.token = uuid.uuid4().hex

    def tick(self) -> dict[str, str | None]:
        """Sweep when no other process swept within `sweep_interval_s`; what was settled (job → new status)."""
        interval = self.config.sweep_interval_s
        if interval <= 0 or not self.connection.set(self.keys.sweep(), self.token, nx=True,
                                                    px=max(1, int(interval * 1000))):
            return {}
        return self.sweep()

    def sweep(self, *, now: float | None = None) -> dict[str, str | None]:
        now = time.time() if now is None else now
        interval = self.config.sweep_interval_s
        strays: dict[str, dict[str, Any]] = {}
        held: Held | None = None
        after: tuple[float, str] | None = None
        while True:
            page = index.open_jobs(self.connection, self.keys, before=now - interval, after=after,
                                   count=defaults.SWEEP_BATCH)
            if not page:
                break
            after = (page[-1][1], page[-1][0])
            ids = [job_id for job_id, _ in page]
            with self.connection.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(self.keys.job(job_id), list(FIELDS))
                records = [decode_fields(FIELDS, values) for values in pipe.execute()]
            closed = [j for j, r in zip(ids, records, strict=True) if r.get("status") in (None, *ENDED)]
            if closed:  # expired (the safety net) or ended without leaving the open jobs
                self.connection.zrem(self.keys.open_jobs(), *closed)
            candidates = {j: r for j, r in zip(ids, records, strict=True) if r.get("status") in SWEPT}
            if candidates:
                held = held or self.held()
                scheduled = self.rq.scheduled_ids(list(candidates))
                claimed = self.claimed([j for j, r in candidates.items() if r["status"] == "started"])
                for job_id, record in candidates.items():
                    if job_id not in scheduled | claimed and not self.findable(job_id, record, held):
                        strays[job_id] = {name: record.get(name) for name in FINGERPRINT}
            if len(page) < defaults.SWEEP_BATCH:
                break
        return self.settle(strays, now)

    def held(self) -> Held:
        pools = [name.decode() for name in self.connection.hkeys(self.keys.pools())]
        beats = self.connection.mget([self.keys.pool(name) for name in pools]) if pools else []
        running: set[str] = set()
        workers: list[str] = []
        silent: set[str] = set()
        for name, raw in zip(pools, beats, strict=True):
            if raw is None:
                silent.add(name)
                continue
            beat = json.loads(raw)
            running.update(beat.get("jobs") or ())
            workers.extend(beat.get("workers") or ())
        # Claims of every registered worker: a dead child stays registered until its supervisor (or the pool
        # reaper) has settled its claims, so a job there is never settled twice.
        registered = set(workers) | set(self.rq.registered_workers())
        waiting = self.rq.queued_ids() | self.rq.claimed_by(sorted(registered))
        return Held(waiting=waiting, running=running, silent=silent)

    def claimed(self, job_ids: list[str]) -> set[str]:
        """The jobs among `job_ids` whose claiming process (`collector run --from-job`) still beats."""
        if not job_ids:
            return set()
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(self.keys.claim_beat(job_id))
            return {job_id for job_id, alive in zip(job_ids, pipe.execute(), strict=True) if alive}

    @staticmethod
    def findable(job_id: str, record: dict[str, Any], held: Held) -> bool:
        if job_id in held.running:
            return True
        if record["status"] == "queued":
            return job_id in held.waiting
        return record.get("pool") in held.silent  # a pool that fell silent: the pool reaper settles its jobs

    def settle(self, strays: dict[str, dict[str, Any]], now: float) -> dict[str, str | None]:
        """Settle the strays an earlier sweep found unchanged; remember the rest for the next sweep."""
        interval = self.config.sweep_interval_s
        seen = {k.decode(): json.loads(v) for k, v in self.connection.hgetall(self.keys.strays()).items()}
        settled: dict[str, str | None] = {}
        kept: dict[str, str] = {}
        for job_id, fingerprint in strays.items():
            before = seen.get(job_id)
            same = before is not None and before["fingerprint"] == fingerprint
            if same and now - before["at"] >= interval / 2:
                settled[job_id] = recover(self.connection, self.config, job_id, kind="died",
                                          cause=cause(fingerprint["status"], interval), expect=fingerprint)
                log.error("sweep: job %s was %s but held by nothing: %s", job_id, fingerprint["status"],
                          settled[job_id] or "it had moved on")
            else:
                kept[job_id] = json.dumps({"fingerprint": fingerprint, "at": before["at"] if same else now})
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.strays())
            if kept:
                pipe.hset(self.keys.strays(), mapping=kept)
            pipe.execute()
        return settled


def cause(status: str, interval_s: float) -> str:
    if status == "queued":
        return (f"the job was queued but in no queue and taken by no worker for over {interval_s:g} s (a worker "
                "took it and was lost before it started, or the queue was emptied); found by the sweep")
    return (f"the job was started but no live worker held it for over {interval_s:g} s (its worker was lost); "
            "found by the sweep")
