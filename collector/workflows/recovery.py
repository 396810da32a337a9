"""Jobs whose worker is gone: retried per policy, failed, stopped or requeued, on the record and in RQ at once."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from redis.client import Pipeline

from collector.config import Config
from collector.store.records import ENDED, JobStore, decode_fields, run_watched
from collector.store.rq import RQ
from collector.workflows.ends import Ends, retry_delay, timeout_message

log = logging.getLogger(__name__)

FIELDS = ("status", "platform_id", "pool", "worker", "attempt", "max_attempts", "deaths", "retry",
          "cancel_requested_at", "canceled_by", "timeout_s", "resumes", "enqueued_at", "started_at", "concurrency")
# What a sweep compares between its two looks at a stray job: any move of the job changes one of them.
FINGERPRINT = ("status", "attempt", "enqueued_at", "started_at", "worker")
KINDS = ("died", "timeout", "canceled", "shutdown")


def decide(kind: str, record: dict[str, Any], config: Config, cause: str) -> tuple[str, dict[str, Any], float]:
    """What becomes of a job whose worker is gone: `(status, fields, retry delay)`. Pure, so it is easy to test."""
    if record.get("status") == "queued":
        # Dequeued but never started: nothing ran, so it simply goes back to the queue.
        return "queued", {}, 0.0
    if kind == "shutdown":
        return "queued", {"error": {"type": "WorkerDiedError", "message": cause}}, 0.0
    if kind == "canceled" or record.get("cancel_requested_at"):
        message = f"stopped on request of {record.get('canceled_by') or 'a client'}: {cause}"
        return "stopped", {"error": {"type": "JobCancelledError", "message": message}}, 0.0
    if kind == "timeout":
        message = f"{timeout_message(record.get('timeout_s'))} ({cause})"
        return "failed", {"error": {"type": "JobTimeoutError", "message": message}}, 0.0
    deaths = int(record.get("deaths") or 0) + 1
    fields: dict[str, Any] = {"deaths": deaths}
    if deaths >= config.max_worker_deaths:
        message = f"{cause}; its worker died {deaths} times, so it is not retried again"
        return "failed", {**fields, "error": {"type": "WorkerDiedError", "message": message}}, 0.0
    fields["error"] = {"type": "WorkerDiedError", "message": cause}
    delay = retry_delay(record, config)
    if delay is not None:
        return "scheduled", fields, delay
    return "failed", fields, 0.0


def recover(
    connection: redis.Redis,
    config: Config,
    job_id: str,
    *,
    kind: str,
    cause: str,
    worker_name: str = "",
    pool: str | None = None,
    expect: dict[str, Any] | None = None,
) -> str | None:
    """Settle a job whose worker is gone (`kind`: died, timeout, canceled, shutdown). Returns the status it was
    given, or None when it had already moved on (ended, retried by someone else, or run by another pool, or, with
    `expect`, any of those record fields differs)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    rq = RQ(connection, config)

    def settle_rq(pipe: Pipeline, status: str) -> None:
        """The record ended before its worker died: only RQ's side may be left `started`."""
        job = rq.fetch(job_id)
        if job is None or job.get_status(refresh=False) not in ("started", "queued"):
            pipe.unwatch()
            return
        pipe.multi()
        rq.settle_ended(pipe, job, status=status, ttl=store.ttl_for(status), worker_name=worker_name)
        pipe.execute()

    def forget_rq_run(pipe: Pipeline) -> None:
        """The record waits (a retry, an input) and no worker runs the job: its worker died right after writing
        that, before RQ's side of the run was cleaned up. The run's execution goes from RQ's started registry, or
        RQ's own cleanup would flag the job failed when the entry expires (and count it running until then)."""
        executions = rq.executions(rq.fetch(job_id))
        pipe.multi()
        rq.forget_executions(pipe, executions)
        rq.release(pipe, job_id, worker_name=worker_name)
        pipe.execute()

    def attempt(pipe: Pipeline) -> tuple[str, str, dict[str, Any]] | None:
        # WATCH the record: two reapers (or a reaper and a late worker) never both settle one job.
        pipe.watch(key)
        values = pipe.hmget(key, list(FIELDS))
        record = decode_fields(FIELDS, values)
        status = record.get("status")
        # Found by the dead worker's supervisor, or by the sweep of its dead pool: whatever RQ still holds of the
        # run that died is stale once the record has ended, or waits (a retry, an input) with no worker on it.
        dead_run = bool(worker_name) or (pool is not None and record.get("pool") == pool)
        if status in ENDED and dead_run:
            settle_rq(pipe, status)
            return None
        if status in ("scheduled", "waiting") and dead_run:
            forget_rq_run(pipe)
            return None
        if status is None or status in ENDED or status in ("scheduled", "waiting"):
            return None
        if pool is not None and record.get("pool") != pool:
            return None
        if expect is not None and any(record.get(name) != value for name, value in expect.items()):
            return None
        if status == "started" and worker_name and record.get("worker") not in (None, worker_name):
            return None  # already retried and running elsewhere: the dead worker's run is history
        new_status, fields, delay = decide(kind, record, config, cause)
        job = rq.fetch(job_id)
        executions = rq.executions(job)
        pipe.multi()
        new_status = Ends(store, rq).worker_lost(
            pipe, job_id, job=job, status=new_status, fields=fields, delay_s=delay, cause=cause, kind=kind,
            worker_name=worker_name, platform_id=record.get("platform_id", ""), executions=executions,
            cap=record.get("concurrency"))
        pipe.execute()
        return new_status, record.get("platform_id", ""), fields

    settled = run_watched(connection, attempt)
    if settled is None:
        return None
    new_status, platform_id, fields = settled
    # One line per job, as the runner writes for a job that raised: an error only when the job failed for good.
    level = {"failed": logging.ERROR, "scheduled": logging.WARNING}.get(new_status, logging.INFO)
    error = fields.get("error") or {"type": "WorkerLost", "message": cause}
    log.log(level, "job %s (%s) %s: %s: %s", job_id, platform_id, new_status, error.get("type"), error.get("message"),
            extra={"job_id": job_id, "platform_id": platform_id, "event": new_status})
    return new_status


def recover_claims(connection: redis.Redis, config: Config, worker_name: str, *, cause: str) -> dict[str, str | None]:
    """Settle the jobs a dead pool child had taken off the queue but not yet started (its claims: RQ's intermediate
    list of that child alone), then forget its claims. Returns each job's new status (None: it had moved on)."""
    rq = RQ(connection, config)
    settled = {job_id: recover(connection, config, job_id, kind="died", cause=cause, worker_name=worker_name)
               for job_id in rq.claimed(worker_name)}
    rq.drop_claims(worker_name)
    return settled


def enqueue_due(connection: redis.Redis, config: Config, *, limit: int = 100) -> int:
    """Move retries whose time has come from RQ's scheduled registry back to the queue. Safe in many processes
    at once: each move WATCHes the record, so a job is moved once and never after a cancel. Returns the count."""
    rq = RQ(connection, config)
    store = JobStore(connection, config)
    moved = 0
    for job_id in rq.due(limit=limit):
        key = store.keys.job(job_id)
        with connection.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                status, error, platform_id = pipe.hmget(key, ["status", "error", "platform_id"])
                job = None
                lost: str | None = None
                if status == b"scheduled":
                    job = rq.fetch(job_id)
                    if job is None:
                        log.warning("scheduled job %s has no RQ job any more; it fails", job_id)
                        lost = (platform_id or b"").decode()
                pipe.multi()
                # A job whose worker died already waited its turn once: its retry goes to the head of the queue.
                died = error is not None and json.loads(error).get("type") == "WorkerDiedError"
                Ends(store, rq).retry_due(pipe, job_id, job=job, at_front=died, platform_id=lost)
                pipe.execute()
                moved += job is not None
            except redis.WatchError:
                continue  # moved or cancelled by someone else meanwhile
    return moved
