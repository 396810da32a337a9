"""The one adapter to RQ: collector's queue, the function names its jobs store, and RQ's side of every job state.

Everything but the pool's worker class (which extends RQ's worker, in `collector.pool`) reaches RQ through here:
every `Queue`, every read of RQ's registries and workers, and RQ's private calls (`_enqueue_job`,
`_handle_failure`), so an RQ upgrade is checked in one place. Writes go on the caller's pipeline, inside its
MULTI, beside the job record's own: a job's record and its RQ state change together or not at all.
"""

from __future__ import annotations

import time
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Worker, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from collector.config import Config
from collector.errors import CollectorError

# The function names RQ stores with collector's jobs. They name no module any more: the pool's workers map them
# to the functions, so jobs queued by any version (and pools of any version) agree on them.
RUN_FUNCTION = "collector.runner.run_job"
CHECK_FUNCTION = "collector.checks.run_check"


class RQ:
    """collector's queue on one connection, and RQ's side of its jobs."""

    def __init__(self, connection: Redis, config: Config) -> None:
        self.connection = connection
        self.config = config
        self.queue = Queue(config.queue_name, connection=connection, serializer=JSONSerializer)
        self.scheduled_key = self.queue.scheduled_job_registry.key

    # -- reading -----------------------------------------------------------------------------------------------
    def fetch(self, job_id: str) -> Job | None:
        """RQ's job `job_id`, or None when its hash is gone (expired, flushed)."""
        try:
            return Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return None

    @staticmethod
    def executions(job: Job | None) -> list[str]:
        """The started-registry entries of `job`'s executions (what a dead worker leaves behind)."""
        return [e.composite_key for e in job.get_executions()] if job is not None else []

    def due(self, *, limit: int) -> list[str]:
        """Ids of retries whose time has come (the scheduled registry up to now), oldest first."""
        return [raw.decode() for raw in self.connection.zrangebyscore(self.scheduled_key, 0, time.time(),
                                                                      start=0, num=limit)]

    def started_job_ids(self) -> list[str]:
        return self.queue.started_job_registry.get_job_ids(cleanup=False)

    def counts(self, *names: str) -> dict[str, int]:
        """Jobs `queued` (waiting in the queue), `started`, `failed`, `finished` (RQ's registries), by name."""
        readers = {
            "queued": lambda: self.queue.count,
            "started": lambda: self.queue.started_job_registry.count,
            "failed": lambda: self.queue.failed_job_registry.count,
            "finished": lambda: self.queue.finished_job_registry.count,
        }
        return {name: readers[name]() for name in names}

    def workers(self) -> list[dict[str, Any]]:
        """The workers listening on the queue: name, state, last heartbeat, current job."""
        return [
            {
                "name": w.name,
                "state": str(w.get_state()),
                "last_heartbeat": w.last_heartbeat.isoformat() if w.last_heartbeat else None,
                "current_job": w.get_current_job_id(),
            }
            for w in Worker.all(queue=self.queue, serializer=JSONSerializer)
        ]

    def worker_count(self) -> int:
        return Worker.count(connection=self.connection, queue=self.queue)

    # -- writing (on the caller's pipeline) ----------------------------------------------------------------------
    def enqueue(self, pipe: Pipeline, job_id: str, *, timeout: int, description: str | None = None) -> None:
        """Queue `job_id` to run (`RUN_FUNCTION`, no arguments: the id names the record)."""
        self.queue.enqueue_call(
            RUN_FUNCTION,
            job_id=job_id,
            timeout=timeout,
            description=description,
            result_ttl=self.config.record_ttl_s,
            failure_ttl=self.config.failed_record_ttl_s,
            pipeline=pipe,
        )

    def enqueue_check(self, pipe: Pipeline, check_id: str, *, linger_s: int, description: str) -> None:
        """Queue a connection check at the front (it is short and someone waits for it); `ttl`: never run once
        nobody waits."""
        self.queue.enqueue_call(
            CHECK_FUNCTION, job_id=check_id, timeout=linger_s, ttl=linger_s, result_ttl=linger_s,
            failure_ttl=linger_s, description=description, at_front=True, pipeline=pipe,
        )

    def requeue(self, pipe: Any, job: Job, *, at_front: bool = False) -> None:
        """Put RQ's job back on the queue as it is (id, function, timeout); `at_front`: first, and only once."""
        if at_front:
            pipe.lrem(self.queue.key, 0, job.id)
        self.queue._enqueue_job(job, pipeline=pipe, at_front=at_front)

    def schedule(self, pipe: Any, job_id: str, *, at: float, exists: bool = True) -> None:
        """RQ's side of a retry: the job waits in the scheduled registry until `at` (unix seconds); its status
        changes too, so a mover that requeues it at once is not overwritten. `exists`: RQ's job hash is there."""
        pipe.zadd(self.scheduled_key, {job_id: at})
        if exists:
            pipe.hset(Job.key_for(job_id), "status", JobStatus.SCHEDULED.value)

    def unschedule(self, pipe: Any, job_id: str) -> None:
        pipe.zrem(self.scheduled_key, job_id)

    def defer(self, pipe: Any, job_id: str) -> None:
        """RQ's side of a job that waits for input or children: `deferred`, in no queue."""
        pipe.hset(Job.key_for(job_id), "status", JobStatus.DEFERRED.value)

    def forget_executions(self, pipe: Any, executions: list[str]) -> None:
        if executions:
            pipe.zrem(self.queue.started_job_registry.key, *executions)

    def fail(self, pipe: Any, job: Job, *, message: str, stopped: bool = False, worker_name: str = "") -> None:
        """RQ's side of a job that ended without a worker to say so: `failed` (or `stopped`), in the failed
        registry with `message`, for as long as a failed record is kept."""
        job.set_status(JobStatus.STOPPED if stopped else JobStatus.FAILED, pipeline=pipe)
        job._handle_failure(message, pipe, worker_name=worker_name)

    def cancel(self, pipe: Any, job_id: str, *, job: Job | None, ttl: int) -> None:
        """RQ's side of a job canceled before it ran: out of the queue and the scheduled registry, `canceled`."""
        pipe.lrem(self.queue.key, 0, job_id)
        pipe.zrem(self.scheduled_key, job_id)
        if job is not None:
            job.set_status(JobStatus.CANCELED, pipeline=pipe)
            self.queue.canceled_job_registry.add(job, ttl=ttl, pipeline=pipe)
            pipe.expire(job.key, ttl)

    # -- housekeeping --------------------------------------------------------------------------------------------
    def prune_canceled(self) -> None:
        """RQ never prunes its canceled registry; drop entries whose TTL has passed (their jobs expired with it)."""
        self.connection.zremrangebyscore(self.queue.canceled_job_registry.key, 0, time.time())

    def bury_workers(self, pool: str) -> None:
        """Unregister every worker of a dead pool (their names start with the pool's)."""
        for worker in Worker.all(connection=self.connection, serializer=JSONSerializer):
            if worker.name.startswith(pool + "."):
                worker.register_death()


def current_job_id(function: str) -> str:
    """The id of the job this worker runs now; `function` (the caller) raises when not called by a worker."""
    job = get_current_job()
    if job is None:
        raise CollectorError(f"{function} must be called by an RQ worker")
    return job.id


def timed_out(exc: BaseException) -> bool:
    """Whether `exc` is RQ's alarm for a job past its timeout."""
    return isinstance(exc, JobTimeoutException)


class JSONWorker(Worker):
    """`Worker.all` with the JSON serializer: the dashboard's worker view fetches current jobs through it."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Worker]:  # type: ignore[override]
        kwargs.setdefault("serializer", JSONSerializer)
        return Worker.all(*args, **kwargs)


__all__ = [
    "CHECK_FUNCTION", "RQ", "RUN_FUNCTION", "JSONSerializer", "JSONWorker", "Job", "current_job_id", "timed_out",
]
