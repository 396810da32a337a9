"""Retrying by hand: a failed, stopped or canceled job queued again as a new attempt of the same id, from its
last checkpoint (`POST /execution/retry`, rq-dashboard's Requeue, `collector retry`)."""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline

from collector.config import Config
from collector.errors import ConflictError, NotFoundError
from collector.specs.policy import RetryPolicy
from collector.store.records import JobStore, decode_fields, run_watched
from collector.store.rq import RQ
from collector.workflows.ends import Ends

RETRYABLE = frozenset({"failed", "stopped", "canceled"})
FIELDS = ["status", "platform_id", "attempt", "resumes", "retry", "timeout_s", "checkpoint", "retries_by_hand"]


def retry(connection: redis.Redis, config: Config, job_id: str, *, by: str) -> dict[str, Any]:
    """Queue the ended job `job_id` again on behalf of `by` (the API token's name). Its retry budget and worker
    deaths start afresh; `NotFoundError` for no record, `ConflictError` for a job that did not end failed, stopped
    or canceled (nothing changes)."""
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    rq = RQ(connection, config)

    def attempt(pipe: Pipeline) -> dict[str, Any]:
        pipe.watch(key)
        record = decode_fields(FIELDS, pipe.hmget(key, FIELDS))
        status = record.get("status")
        if status is None:
            raise NotFoundError(f"no job {job_id!r}: it never existed or its record expired; check the id",
                                details={"job_id": job_id})
        if status not in RETRYABLE:
            raise ConflictError(
                f"job {job_id} is {status!r}; only a job that ended failed, stopped or canceled can be retried by "
                + ("hand (a finished job is submitted again instead)" if status == "finished" else
                   "hand (cancel it first to run it again from its checkpoint)"),
                details={"job_id": job_id, "status": status},
            )
        policy = RetryPolicy.from_record(record.get("retry"), config)
        tries = int(record.get("attempt") or 0) - int(record.get("resumes") or 0)
        hand = int(record.get("retries_by_hand") or 0) + 1
        fields = {
            # the new attempt gets a whole retry budget of its own (retry_delay counts tries against this)
            "max_attempts": tries + policy.max_attempts,
            "deaths": 0,
            "retries_by_hand": hand,
            "retried_by": by,
        }
        job = rq.fetch(job_id)
        pipe.multi()
        Ends(store, rq).retried(pipe, job_id, job=job, by=by, previous=status, platform_id=record["platform_id"],
                                fields=fields, timeout_s=int(record.get("timeout_s") or config.job_timeout_s))
        pipe.execute()
        return {"job_id": job_id, "status": "queued", "previous": status, "retried_by": by,
                "retries_by_hand": hand, "from_checkpoint": record.get("checkpoint") is not None}

    return run_watched(connection, attempt)


def retry_failed(connection: redis.Redis, config: Config, *, by: str) -> dict[str, Any]:
    """Retry by hand every job of RQ's failed registry that can be; those that cannot (no record, not ended) are
    counted as skipped."""
    retried, skipped = [], []
    for job_id in RQ(connection, config).failed_job_ids():
        try:
            retry(connection, config, job_id, by=by)
            retried.append(job_id)
        except (ConflictError, NotFoundError):
            skipped.append(job_id)
    return {"count": len(retried), "retried": retried, "skipped": skipped}
