"""Claiming: a queued job taken off the queue to run in another process as that job (`collector run --from-job`):
its record, its attempts and its events, as if a worker of the pool ran it."""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline

from collector import defaults
from collector.config import Config
from collector.errors import ConflictError, NotFoundError
from collector.store.records import ENDED, JobStore, decode_fields, run_watched
from collector.store.rq import RQ
from collector.workflows.ends import Ends

FIELDS = ["status", "worker", "retry_at", "waiting", "secrets", "inputs"]


def claim(connection: redis.Redis, config: Config, job_id: str, *, by: str) -> dict[str, Any]:
    """Take the queued job `job_id` off the queue for `by`; the caller runs it next (`runner.execute`), then calls
    `settle`. `ConflictError` with the reason when it is not queued (or a worker took it meanwhile); nothing
    changes then. Returns the fields the caller needs to know before it runs (`secrets`, `inputs`: sealed)."""
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    rq = RQ(connection, config)

    def attempt(pipe: Pipeline) -> dict[str, Any]:
        pipe.watch(key, *rq.lane_keys)  # a worker dequeueing it meanwhile changes its lane: look again
        record = decode_fields(FIELDS, pipe.hmget(key, FIELDS))
        status = record.get("status")
        if status is None:
            raise NotFoundError(f"no job {job_id!r}: it never existed or its record expired; check the id",
                                details={"job_id": job_id})
        if status != "queued" or not rq.queued_here(pipe, job_id):
            raise ConflictError(f"job {job_id} cannot be claimed: {_why(record)}; only a queued job can",
                                details={"job_id": job_id, "status": status})
        pipe.multi()
        Ends(store, rq).claimed(pipe, job_id, by=by)
        pipe.execute()
        return record

    return run_watched(connection, attempt)


def settle(connection: redis.Redis, config: Config, job_id: str) -> str:
    """After a claimed job's attempt: RQ's side of how it ended (the record says). Returns the record's status."""
    store = JobStore(connection, config)
    rq = RQ(connection, config)
    record = store.read(job_id, "status", "error")
    status = str(record.get("status", ""))
    if status in ENDED:
        message = (record.get("error") or {}).get("message", status)
        with connection.pipeline(transaction=True) as pipe:
            Ends(store, rq).claim_settled(pipe, job_id, job=rq.fetch(job_id), status=status, message=message)
            pipe.execute()
    else:  # a retry or a wait: the pool has it now, and the sweep may look at it again
        connection.delete(store.keys.claim_beat(job_id))
    return status


def beat(connection: redis.Redis, config: Config, job_id: str, *, by: str) -> None:
    """The claiming process is alive: the sweep leaves `job_id` to it for another CLAIM_BEAT_TTL_S."""
    connection.set(JobStore(connection, config).keys.claim_beat(job_id), by, ex=defaults.CLAIM_BEAT_TTL_S)


def _why(record: dict[str, Any]) -> str:
    status = record.get("status")
    if status == "queued":
        return "a worker took it off the queue just now"
    if status == "started":
        return f"it runs already (worker {record.get('worker') or '?'})"
    if status == "scheduled":
        return f"it waits for its retry at {record.get('retry_at') or '?'} (claim it once it is queued again)"
    if status == "waiting":
        kind = (record.get("waiting") or {}).get("kind")
        return f"it waits for {'its sub-jobs' if kind == 'children' else 'input (resume it first)'}"
    if status in ENDED:
        return (f"it ended {status!r}" + (" (retry it by hand with `collector retry`, then claim it)"
                                          if status != "finished" else ""))
    return f"it is {status!r}"
