"""Concurrency caps at work: a child admits or parks the job it took, freed slots wake parked jobs in order, and
maintenance repairs slots whose jobs no longer run (crash safety)."""

from __future__ import annotations

import logging
import time

import redis
from redis.client import Pipeline

from collector import defaults
from collector.config import Config
from collector.specs.caps import cap_limit
from collector.specs.registry import Registry
from collector.store.caps import PARKED, CapSlots
from collector.store.records import ENDED, JobStore, run_watched
from collector.store.rq import RQ
from collector.workflows.ends import Ends

log = logging.getLogger(__name__)

# A slot held by a job in one of these states is held by nothing that runs: maintenance gives it back.
NOT_RUNNING = ENDED | {"scheduled", "waiting"}


class Caps:
    """The concurrency caps of every pool on one Redis, as a child or a maintenance tick uses them."""

    def __init__(self, *, connection: redis.Redis, config: Config, registry: Registry) -> None:
        self.connection, self.config, self.registry = connection, config, registry
        self.store = JobStore(connection, config)
        self.rq = RQ(connection, config)
        self.slots = CapSlots(connection, self.store.keys)

    def limit(self, cap: str) -> int | None:
        return cap_limit(cap, self.registry, self.config)

    def admit(self, job_id: str, *, cap: str, timeout_s: float) -> bool:
        """Whether the job a child took may run now: it holds a slot of `cap` (or nothing caps it). False: it is
        parked (`deferred`, `waiting_for: concurrency`) and the child takes the next job."""
        limit = self.limit(cap)
        if limit is None:
            return True
        now = time.time()
        answer = self.slots.gate(job_id, cap=cap, limit=limit, now=now, expiry=now + self._hold_s(timeout_s),
                                 rq_job_key=self.rq.job_key(job_id))
        if answer != PARKED:
            return True
        log.info("job %s parked: %s runs %d job(s) at once, over every pool", job_id, cap, limit,
                 extra={"job_id": job_id, "event": "deferred"})
        self.wake(cap)  # a slot may have freed between its holder's end and this park
        return False

    def wake(self, cap: str) -> list[str]:
        """Queue again, oldest first, the parked jobs of `cap` that free slots now take; their ids."""
        limit = self.limit(cap)
        if limit is None:  # the cap was lifted: every parked job may run
            limit = 2**31
        woken: list[str] = []
        while True:
            now = time.time()
            batch = self.slots.wake(cap, limit=limit, now=now, expiry=now + self._hold_s(self.config.job_timeout_s))
            if not batch:
                return woken
            # Each goes to the head of the queue: the youngest first, so the oldest ends up ahead of it.
            moved = [job_id for job_id in reversed(batch) if self._unpark(job_id, cap)]
            woken += reversed(moved)
            if len(moved) == len(batch):
                return woken

    def tend(self) -> None:
        """Maintenance of every cap key: slots held by jobs that no longer run go back, jobs woken but never
        queued again (their waker died) are queued, slots that freed wake parked jobs, and a key with nothing held
        or parked is forgotten. Reads the slots' holders only (a few per key), never the parked lists."""
        for cap in self.slots.caps():
            held = self.slots.holders(cap)
            records = self._statuses(held)
            for job_id in held:
                status, waiting_for = records[job_id]
                if status is None or status in NOT_RUNNING:
                    self._free(job_id, cap)
                    log.warning("job %s held a slot of %s while %s; the slot was given back", job_id, cap,
                                status or "gone")
                elif status == "deferred" and waiting_for == "concurrency":
                    self._unpark(job_id, cap)
            self.wake(cap)  # a parked job that ended meanwhile (its record expired) is dropped as its turn comes
            self.slots.drop_if_idle(cap)

    def _hold_s(self, timeout_s: float) -> float:
        """How long a slot is held at most should nothing give it back: the job's timeout, its kill grace, slack."""
        return (timeout_s or self.config.job_timeout_s) + defaults.TIMEOUT_GRACE_S + defaults.CAP_LEASE_SLACK_S

    def _statuses(self, job_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self.store.keys.job(job_id), ["status", "waiting_for"])
            answers = pipe.execute()
        return {job_id: tuple(v.decode() if v else None for v in values)  # type: ignore[misc]
                for job_id, values in zip(job_ids, answers, strict=True)}

    def _free(self, job_id: str, cap: str) -> None:
        with self.connection.pipeline(transaction=True) as pipe:
            Ends(self.store, self.rq).slot_released(pipe, job_id, cap=cap)
            pipe.execute()

    def _unpark(self, job_id: str, cap: str) -> bool:
        """Queue a woken job again (it holds the slot kept for it); False, and its slot given back, when it is no
        longer parked (canceled meanwhile, or queued again by another waker)."""
        key = self.store.keys.job(job_id)

        def attempt(pipe: Pipeline) -> bool:
            pipe.watch(key)
            status, waiting_for, platform_id = pipe.hmget(key, ["status", "waiting_for", "platform_id"])
            if status != b"deferred" or waiting_for != b"concurrency":
                pipe.multi()
                if status != b"queued":  # queued: another waker got there first, and the slot is its
                    Ends(self.store, self.rq).slot_released(pipe, job_id, cap=cap)
                pipe.execute()
                return False
            job = self.rq.fetch(job_id)
            pipe.multi()
            Ends(self.store, self.rq).unparked(pipe, job_id, job=job, platform_id=(platform_id or b"").decode(),
                                               cap=cap)
            pipe.execute()
            return job is not None

        return run_watched(self.connection, attempt)
