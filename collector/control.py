"""Cancelling jobs: a queued or scheduled one never runs; a running one is asked to stop, then stopped."""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from collector import metrics
from collector.config import Config
from collector.errors import ConflictError, NotFoundError
from collector.state import ENDED, JobStore, run_watched, utcnow

WAITING = frozenset({"queued", "scheduled", "deferred", "waiting"})


def cancel(connection: redis.Redis, config: Config, job_id: str, *, by: str | None = None,
           reason: str | None = None) -> dict[str, Any]:
    """Cancel a job. A waiting job ends `canceled` at once; a running one gets `cancel_requested_at` and ends
    `stopped` when it stops (or is killed `cancel_grace_s` later). Ended jobs raise `ConflictError`.
    The job's sub-jobs (and theirs) are cancelled with it. `by` is who cancels (the API token's name, never what
    the caller writes), recorded as `canceled_by`; `reason` is the caller's note, recorded as `cancel_reason`."""
    from collector.waiting import cancel_children

    answer = _cancel_one(connection, config, job_id, by=by, reason=reason)
    children = JobStore(connection, config).read(job_id, "children").get("children") or []
    if children:
        answer["children_canceled"] = cancel_children(connection, config, children, by=f"parent job {job_id}")
    return answer


def _cancel_one(connection: redis.Redis, config: Config, job_id: str, *, by: str | None,
                reason: str | None = None) -> dict[str, Any]:
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    queue = Queue(config.queue_name, connection=connection, serializer=JSONSerializer)
    who = by or "a client"
    noted = {"cancel_reason": reason} if reason else {}

    def attempt(pipe: Pipeline) -> dict[str, Any]:
        # WATCH the record: a worker starting the job meanwhile changes it, and we look again.
        pipe.watch(key)
        raw = pipe.hmget(key, ["status", "cancel_requested_at", "platform_id"])
        status, requested, platform_id = (v.decode() if v else None for v in raw)
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
        now = utcnow()
        if status in WAITING:
            job = _fetch(connection, job_id)
            pipe.multi()
            _cancel_waiting(pipe, store, queue, job_id, job, who=who, now=now, noted=noted)
            metrics.count(pipe, store.keys, "canceled", platform_id or "")
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


def _fetch(connection: redis.Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def _cancel_waiting(pipe: Any, store: JobStore, queue: Queue, job_id: str, job: Job | None, *,
                    who: str, now: str, noted: dict[str, str]) -> None:
    store.update(job_id, {"status": "canceled", "canceled_by": who, "canceled_at": now, "ended_at": now, **noted},
                 pipe)
    store.event(job_id, "canceled", pipe, by=who, **({"reason": noted["cancel_reason"]} if noted else {}))
    ttl = store.ttl_for("canceled")
    store.expire(job_id, ttl, pipe)
    pipe.hdel(store.keys.job(job_id), "wait_nonce")
    pipe.zrem(store.keys.wait_deadlines(), job_id)
    pipe.srem(store.keys.waiting_parents(), job_id)
    pipe.lrem(queue.key, 0, job_id)
    pipe.zrem(queue.scheduled_job_registry.key, job_id)
    if job is not None:
        job.set_status(JobStatus.CANCELED, pipeline=pipe)
        queue.canceled_job_registry.add(job, ttl=ttl, pipeline=pipe)
        pipe.expire(job.key, ttl)
