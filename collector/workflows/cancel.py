"""Cancelling jobs: a queued or scheduled one never runs; a running one is asked to stop, then stopped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from redis.client import Pipeline

from collector.config import Config
from collector.errors import ConflictError, NotFoundError
from collector.store.records import ENDED, JobStore, run_watched
from collector.store.rq import RQ
from collector.types import iso
from collector.workflows.ends import Ends

WAITING = frozenset({"queued", "scheduled", "deferred", "waiting"})


def cancel(connection: redis.Redis, config: Config, job_id: str, *, by: str | None = None,
           reason: str | None = None) -> dict[str, Any]:
    """Cancel a job. A waiting job ends `canceled` at once; a running one gets `cancel_requested_at` and ends
    `stopped` when it stops (or is killed `cancel_grace_s` later). Ended jobs raise `ConflictError`.
    The job's sub-jobs (and theirs) are cancelled with it. `by` is who cancels (the API token's name, never what
    the caller writes), recorded as `canceled_by`; `reason` is the caller's note, recorded as `cancel_reason`."""
    answer = _cancel_one(connection, config, job_id, by=by, reason=reason)
    children = JobStore(connection, config).read(job_id, "children").get("children") or []
    if children:
        answer["children_canceled"] = cancel_children(connection, config, children, by=f"parent job {job_id}")
    return answer


def _cancel_one(connection: redis.Redis, config: Config, job_id: str, *, by: str | None,
                reason: str | None = None) -> dict[str, Any]:
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    rq = RQ(connection, config)
    who = by or "a client"
    noted = {"cancel_reason": reason} if reason else {}

    def attempt(pipe: Pipeline) -> dict[str, Any]:
        # WATCH the record: a worker starting the job meanwhile changes it, and we look again.
        pipe.watch(key)
        raw = pipe.hmget(key, ["status", "cancel_requested_at", "platform_id", "concurrency"])
        status, requested, platform_id, cap = (v.decode() if v else None for v in raw)
        if status is None:
            raise NotFoundError(
                f"no job {job_id!r}: it never existed or its record expired; check the id",
                details={"job_id": job_id},
            )
        if status in ENDED:
            ended_at = pipe.hget(key, "ended_at")
            raise ConflictError(
                f"job {job_id} already ended as {status!r}"
                + (f" at {ended_at.decode()}" if ended_at else "")
                + "; there is nothing to cancel (submit it again to run it again)",
                details={"job_id": job_id, "status": status},
            )
        now = iso()
        if status in WAITING:
            job = rq.fetch(job_id)
            pipe.multi()
            Ends(store, rq).canceled(pipe, job_id, job=job, who=who, now=now, platform_id=platform_id or "",
                                     reason=reason, cap=cap)
            pipe.execute()
            return {"job_id": job_id, "status": "canceled", "canceled_by": who, "canceled_at": now, **noted}
        if requested:
            pipe.unwatch()
            return {"job_id": job_id, "status": status, "cancel_requested_at": requested,
                    "message": "a cancel was already requested; the job stops soon"}
        pipe.multi()
        store.update(job_id, {"cancel_requested_at": now, "canceled_by": who, "canceled_at": now, **noted}, pipe)
        store.event(job_id, "cancel_requested", pipe, by=who, **({"reason": reason} if reason else {}))
        pipe.sadd(store.keys.cancels(), job_id)
        pipe.execute()
        return {
            "job_id": job_id, "status": status, "cancel_requested_at": now, "canceled_by": who, **noted,
            "message": f"the job was asked to stop; it is killed if still running in "
            f"{config.cancel_grace_s:g} s, and ends 'stopped'",
        }

    return run_watched(connection, attempt)


def cancel_children(connection: redis.Redis, config: Config, children: Iterable[str], *, by: str) -> list[str]:
    """Cancel every child that has not ended; returns the ids a cancel reached."""
    reached = []
    for child in children:
        try:
            cancel(connection, config, child, by=by)
            reached.append(child)
        except (ConflictError, NotFoundError):
            continue  # already ended or expired: nothing to cancel
    return reached
