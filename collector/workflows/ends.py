"""Every end of a job, written in one place: finished, failed, stopped, retried, requeued, canceled, timed out.
However a job ends (or stops running to wait), the concurrency slot it held is given back in the same write.

Each method writes one transition on the caller's pipeline, inside its MULTI (the caller WATCHes and reads
first): the record, its event, its expiry, the metrics and RQ's side, together or not at all. `retry_delay`
is the one retry decision, for a transient error and for a dead worker alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from collector import defaults
from collector.config import Config
from collector.specs.policy import RetryPolicy
from collector.store import index, metrics
from collector.store.caps import free_slot
from collector.store.datasets import KeptDataset
from collector.store.records import DATASETS, JobStore
from collector.store.rq import RQ, Job
from collector.types import iso
from collector.workflows.notify import queue_for

# What a retry by hand clears from the record: how the last attempt ended, and a cancel it answered.
RETRY_CLEARS = ("error", "result", "ended_at", "retry_at", "cancel_requested_at", "canceled_by", "canceled_at",
                "cancel_reason")


def retry_delay(record: Mapping[str, Any], config: Config) -> float | None:
    """Seconds until the next try of a job whose attempt failed for now (a transient error, a dead worker), or
    None when its tries are spent. `record` has the job's `attempt`, `resumes`, `retry` and `max_attempts`;
    runs after a wait (resumes) are no retries."""
    policy = RetryPolicy.from_record(record.get("retry"), config)
    max_attempts = int(record.get("max_attempts") or policy.max_attempts)
    tries = int(record.get("attempt") or 0) - int(record.get("resumes") or 0)
    if tries >= max_attempts:
        return None
    return policy.delay(max(tries, 1))


def result_summary(result: Any) -> Any:
    """What a `finished` event says of the result: the result itself (already masked) when small, else its size."""
    size = len(json.dumps(result, default=str))
    return result if size <= defaults.EVENT_RESULT_MAX_BYTES else {"bytes": size, "shown": False}


def timeout_message(timeout_s: Any) -> str:
    return (f"the job ran longer than its timeout of {timeout_s} s and was stopped; give the spec a larger "
            "timeout_s (or the platform a larger TIMEOUT_S) if it needs longer")


class Ends:
    """Writes the transitions of jobs through `store` (records, events) and `rq` (RQ's side)."""

    def __init__(self, store: JobStore, rq: RQ) -> None:
        self.store = store
        self.rq = rq

    def attempt_ended(self, pipe: Any, job_id: str, *, platform_id: str, attempt: int, status: str,
                      fields: dict[str, Any], datasets: Mapping[str, KeptDataset], duration_s: float,
                      delay_s: float = 0.0, known: Mapping[str, Any] | None = None, cap: str | None = None) -> None:
        """What a worker writes when an attempt ends: `finished`, `failed` or `stopped` with the datasets it kept,
        or `scheduled` for another try in `delay_s`. RQ's side is the worker's own to write. `known`: the record's
        `notify` and what a notification names, as the worker read them (spares reading them again). `cap`: the
        concurrency cap key whose slot the attempt held."""
        event: dict[str, Any] = {"attempt": attempt}
        if "error" in fields:
            event["error"] = {k: fields["error"][k] for k in ("type", "message")}
        if status == "finished" and "result" in fields:
            event["result"] = result_summary(fields["result"])
        if status == "scheduled":
            self._retry(pipe, job_id, delay_s=delay_s, fields=fields, event=event, platform_id=platform_id)
        else:
            self._ended(pipe, job_id, status=status, fields=fields, event=event, platform_id=platform_id,
                        datasets=datasets, duration_s=duration_s, known=known)
            if status == "finished" and "error" not in fields:
                # An earlier attempt's error (and when its retry was due) no longer describes the job; the
                # events keep it (`retry_scheduled`, `worker_lost`).
                pipe.hdel(self.store.keys.job(job_id), "error", "retry_at")
        pipe.srem(self.store.keys.cancels(), job_id)
        self.slot_released(pipe, job_id, cap=cap)

    def worker_lost(self, pipe: Any, job_id: str, *, job: Job | None, status: str, fields: dict[str, Any],
                    delay_s: float, cause: str, kind: str, worker_name: str, platform_id: str,
                    executions: list[str], cap: str | None = None) -> str:
        """A job whose worker is gone, as `recovery.decide` settled it: retried, requeued, failed or stopped.
        Returns the status written (`failed` instead of `queued` when RQ's job is gone). `cap`: the record's
        concurrency cap key; a requeued job takes a slot anew when it runs."""
        event: dict[str, Any] = {"cause": cause}
        if "error" in fields:
            event["error"] = fields["error"]
        self.store.event(job_id, "worker_lost", pipe, cause=cause, worker=worker_name)
        self.rq.forget_executions(pipe, executions)
        self.rq.release(pipe, job_id, worker_name=worker_name)
        pipe.srem(self.store.keys.cancels(), job_id)
        self.slot_released(pipe, job_id, cap=cap)
        if status == "queued" and job is None:  # nothing left to put back on the queue: it cannot run again
            status = "failed"
            fields = {**fields, "error": {"type": "WorkerDiedError",
                                          "message": f"{cause}; RQ's job is gone, so it cannot be queued again"}}
            event["error"] = fields["error"]
        if status == "scheduled":
            self._retry(pipe, job_id, delay_s=delay_s, fields=fields, event=event, platform_id=platform_id,
                        exists=job is not None)
        elif status == "queued":  # never started, or its pool shut down: no new outcome, back to the front
            reason = kind if kind == "shutdown" else "never started"
            self._requeue(pipe, job_id, job=job, fields=fields, kind="requeued", event={"reason": reason, **event},
                          at_front=True)
        else:
            self._ended(pipe, job_id, status=status, fields=fields, event=event, platform_id=platform_id)
            if job is not None:
                self.rq.fail(pipe, job, message=cause, stopped=status == "stopped", worker_name=worker_name)
        return status

    def resumed(self, pipe: Any, job_id: str, *, job: Job | None, reason: str, fields: dict[str, Any],
                timeout_s: Any = None, by: str | None = None) -> None:
        """A waiting job queued again (its input came, its children ended): it starts over from its checkpoint.
        When RQ's job hash is gone (flushed), a new one is made with the same id. `by`: who resumed it."""
        self._leave_wait(pipe, job_id, "waiting", "wait_nonce")
        event = {"reason": reason, **({"by": by} if by else {})}
        self._requeue(pipe, job_id, job=job, fields=fields, kind="resumed", event=event,
                      recreate_timeout_s=timeout_s or self.store.config.job_timeout_s)

    def retry_due(self, pipe: Any, job_id: str, *, job: Job | None, at_front: bool = False,
                  platform_id: str | None = None) -> None:
        """A retry whose time has come leaves the scheduled registry for the queue; `at_front`: at the head of the
        queue, ahead of any backlog (a retry after its worker died). A `scheduled` job (`platform_id` given) whose
        RQ job is gone cannot run again: it fails rather than wait for nothing."""
        self.rq.unschedule(pipe, job_id)
        if job is not None:
            self._requeue(pipe, job_id, job=job, fields={}, kind="requeued", event={"reason": "retry due"},
                          at_front=at_front)
        elif platform_id is not None:
            error = {"type": "WorkerDiedError", "message": "its retry came due but RQ's job is gone (expired or "
                     "deleted), so it cannot be queued again; submit the job anew"}
            self._ended(pipe, job_id, status="failed", fields={"error": error}, event={"error": error},
                        platform_id=platform_id)

    def wait_timed_out(self, pipe: Any, job_id: str, *, job: Job | None, message: str, platform_id: str) -> None:
        """A job that waited past its deadline (for input, or for its children) fails."""
        error = {"type": "WaitTimeoutError", "message": message}
        self._ended(pipe, job_id, status="failed", fields={"error": error}, event={"error": error},
                    platform_id=platform_id)
        self._leave_wait(pipe, job_id, "wait_nonce")
        if job is not None:
            self.rq.fail(pipe, job, message=message)

    def canceled(self, pipe: Any, job_id: str, *, job: Job | None, who: str, now: str, platform_id: str,
                 reason: str | None = None, cap: str | None = None) -> None:
        """A job canceled before it ran (queued, scheduled, deferred or waiting): it never runs. `who` is the API
        token's name; `reason` the caller's note (`cancel_reason`); `cap` its concurrency cap key (a parked job
        leaves the parked list, a woken one the slot kept for it)."""
        noted = {"cancel_reason": reason} if reason else {}
        fields = {"canceled_by": who, "canceled_at": now, "ended_at": now, **noted}
        event = {"by": who, **({"reason": reason} if reason else {})}
        self._ended(pipe, job_id, status="canceled", fields=fields, event=event, platform_id=platform_id)
        self._leave_wait(pipe, job_id, "wait_nonce", "waiting_for")
        self.slot_released(pipe, job_id, cap=cap)
        self.rq.cancel(pipe, job_id, job=job, ttl=self.store.ttl_for("canceled"))

    def unparked(self, pipe: Any, job_id: str, *, job: Job | None, platform_id: str, cap: str) -> None:
        """A job parked over its concurrency cap took a slot that freed: back at the head of the queue, where a
        child finds the slot kept for it. One whose RQ job is gone cannot run again: it fails."""
        pipe.hdel(self.store.keys.job(job_id), "waiting_for")
        if job is not None:
            self._requeue(pipe, job_id, job=job, fields={}, kind="requeued", event={"reason": "concurrency slot free"},
                          at_front=True)
            return
        error = {"type": "WorkerDiedError", "message": "a concurrency slot freed for it but RQ's job is gone "
                 "(expired or deleted), so it cannot be queued again; submit the job anew"}
        self._ended(pipe, job_id, status="failed", fields={"error": error}, event={"error": error},
                    platform_id=platform_id)
        self.slot_released(pipe, job_id, cap=cap)

    def slot_released(self, pipe: Any, job_id: str, *, cap: str | None) -> None:
        """The job holds `cap`'s slot (or its place among the parked) no more: it ended, waits for input or
        children, or goes back to the queue. Nothing for an uncapped job."""
        if cap:
            free_slot(pipe, self.store.keys, job_id, cap)

    def retried(self, pipe: Any, job_id: str, *, job: Job | None, by: str, previous: str, fields: dict[str, Any],
                timeout_s: int, platform_id: str) -> None:
        """An ended job (failed, stopped, canceled) queued again by hand: a new attempt of the same id that starts
        from its last checkpoint. What said how it ended goes; until it ends again the record keeps only the safety
        TTL of a job not yet ended, and the sweep watches it again."""
        keys = self.store.keys
        pipe.hdel(keys.job(job_id), *RETRY_CLEARS)
        self._keep_open(pipe, job_id)
        index.reopen(pipe, keys, job_id)
        pipe.srem(keys.cancels(), job_id)
        self._leave_wait(pipe, job_id, "wait_nonce")
        self.store.update(job_id, {"status": "queued", "enqueued_at": iso(), **fields}, pipe)
        self.store.event(job_id, "retried", pipe, by=by, previous=previous,
                         retries_by_hand=fields.get("retries_by_hand"))
        self.rq.requeue_ended(pipe, job_id, job=job, timeout=timeout_s)
        metrics.count(pipe, keys, "retried", platform_id)

    def claimed(self, pipe: Any, job_id: str, *, by: str) -> None:
        """A queued job taken off the queue to run outside the pool (`collector run --from-job`), as that job."""
        self.store.update(job_id, {"claimed_by": by, "claimed_at": iso()}, pipe)
        self.store.event(job_id, "claimed", pipe, by=by)
        self.rq.claim(pipe, job_id)
        pipe.set(self.store.keys.claim_beat(job_id), by, ex=defaults.CLAIM_BEAT_TTL_S)

    def claim_settled(self, pipe: Any, job_id: str, *, job: Job | None, status: str, message: str) -> None:
        """RQ's side of a claimed job's end (its record's end is written as any attempt's): a worker writes it for
        the jobs it runs, so the process that claimed one writes it here. A retry or a wait has its side already."""
        pipe.delete(self.store.keys.claim_beat(job_id))
        if job is None:
            return
        if status == "finished":
            self.rq.finish(pipe, job, ttl=self.store.ttl_for(status))
        elif status in ("failed", "stopped"):
            self.rq.fail(pipe, job, message=message, stopped=status == "stopped")

    # -- the pieces ----------------------------------------------------------------------------------------------
    def _ended(self, pipe: Any, job_id: str, *, status: str, fields: dict[str, Any], event: dict[str, Any],
               platform_id: str, datasets: Mapping[str, KeptDataset] | None = None,
               duration_s: float | None = None, known: Mapping[str, Any] | None = None) -> None:
        """The record ends as `status` and expires with everything beside it; the end is counted."""
        store = self.store
        ttl = store.ttl_for(status)
        record = {"status": status, "ended_at": iso(), **fields}
        if datasets is not None:
            summary = store.save_datasets(job_id, datasets, pipe, ttl_s=ttl)  # SET ... EX per chunk
            if summary:
                record["datasets"] = summary
        store.update(job_id, record, pipe)
        store.event(job_id, status, pipe, **event)
        if status in ("finished", "failed"):
            told = {"result": fields["result"]} if "result" in fields else {}
            if "error" in fields:
                told["error"] = {k: fields["error"].get(k) for k in ("type", "message")}
            queue_for(pipe, store, job_id, status, known=known, status=status, **told)
        store.expire(job_id, ttl, pipe, DATASETS if datasets is None else [n for n in DATASETS if n not in datasets])
        index.close(pipe, store.keys, job_id)
        if duration_s is None:
            metrics.count(pipe, store.keys, status, platform_id)
        else:
            metrics.job_ended(pipe, store.keys, job_id=job_id, platform_id=platform_id, status=status,
                              duration_s=duration_s)

    def _retry(self, pipe: Any, job_id: str, *, delay_s: float, fields: dict[str, Any], event: dict[str, Any],
               platform_id: str, exists: bool = True) -> None:
        """The job is `scheduled`: RQ's scheduled registry holds it until its retry is due."""
        at = time.time() + delay_s
        retry_at = iso(at)
        self.store.update(job_id, {"status": "scheduled", **fields, "retry_at": retry_at}, pipe)
        self.store.event(job_id, "retry_scheduled", pipe, **event, delay_s=delay_s, retry_at=retry_at)
        self._keep_open(pipe, job_id)
        self.rq.schedule(pipe, job_id, at=at, exists=exists)
        metrics.count(pipe, self.store.keys, "retried", platform_id)

    def _requeue(self, pipe: Any, job_id: str, *, job: Job | None, fields: dict[str, Any], kind: str,
                 event: dict[str, Any], at_front: bool = False, recreate_timeout_s: int | None = None) -> None:
        self.store.update(job_id, {"status": "queued", "enqueued_at": iso(), **fields}, pipe)
        self.store.event(job_id, kind, pipe, **event)
        self._keep_open(pipe, job_id)
        if job is not None:
            self.rq.requeue(pipe, job, at_front=at_front)
        elif recreate_timeout_s is not None:
            self.rq.recreate(pipe, job_id, timeout=recreate_timeout_s)

    def _keep_open(self, pipe: Any, job_id: str) -> None:
        """The safety net of a job not yet ended: its record and events expire `open_record_ttl_s` after its last
        move, however it got lost (an end sets the final TTL)."""
        self.store.expire(job_id, self.store.config.open_record_ttl_s, pipe, datasets=())

    def _leave_wait(self, pipe: Any, job_id: str, *fields: str) -> None:
        """The job waits no more: its wait's fields, deadline and place among the waiting parents go."""
        keys = self.store.keys
        pipe.hdel(keys.job(job_id), *fields)
        pipe.zrem(keys.wait_deadlines(), job_id)
        pipe.srem(keys.waiting_parents(), job_id)
