"""The one adapter to RQ: collector's queue, the function names its jobs store, and RQ's side of every job state.

Everything but the pool's worker class (which extends RQ's worker, in `collector.pool`) reaches RQ through this
module and its two siblings (`claiming_queue.py`, the queue a pool child takes jobs with; `rq_dashboard.py`, what
rq-dashboard reads):
every `Queue`, every read of RQ's registries and workers, and RQ's private calls (`_enqueue_job`,
`_handle_failure`), so an RQ upgrade is checked in one place. Writes go on the caller's pipeline, inside its
MULTI, beside the job record's own: a job's record and its RQ state change together or not at all.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Worker, get_current_job
from rq import registry as rq_registry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import DefaultSerializer, JSONSerializer
from rq.timeouts import JobTimeoutException

from collector.config import Config
from collector.errors import CollectorError
from collector.store import lanes
from collector.store.lanes import DEFAULT_PRIORITY, PRIORITIES
from collector.store.records import Keys


def _resolving_known_serializers() -> None:
    """RQ resolves its serializer each time it makes a Job, a Queue or a registry, six times a job in a worker, by
    an isinstance check against a `typing.Protocol`: about 20 µs each on Python 3.11, near a tenth of a worker's
    time per job. RQ's own two serializers are taken as they are; anything else is still checked by RQ."""
    from rq import job as rq_job
    from rq import queue as rq_queue
    from rq import serializers
    from rq.worker import base as rq_worker

    check = serializers.resolve_serializer

    def resolve(serializer: Any = None) -> Any:
        if serializer is JSONSerializer or serializer is DefaultSerializer:
            return serializer
        return check(serializer)

    for module in (rq_job, rq_queue, rq_registry, rq_worker):
        module.resolve_serializer = resolve  # type: ignore[attr-defined]


def _parsing_timestamps_in_c() -> None:
    """RQ reads each timestamp of a job hash with `datetime.strptime` (about 15 µs, twice for every job a worker
    takes); its own format (`2026-01-02T03:04:05.123456Z`) is read by `datetime.fromisoformat`, in C, to the same
    value. Anything else still goes to RQ's parser."""
    from rq import utils as rq_utils

    parse = rq_utils.utcparse

    def utcparse(string: str) -> datetime.datetime:
        if string.endswith("Z"):
            with contextlib.suppress(ValueError):
                return datetime.datetime.fromisoformat(string).replace(tzinfo=datetime.UTC)
        return parse(string)

    rq_utils.utcparse = utcparse


def _formatting_timestamps_in_c() -> None:
    """RQ writes each timestamp with `strftime` (eight a job); `isoformat` writes the same text faster. RQ's
    format ignores a timezone, as this does; a year before 1000 still goes to RQ's (strftime pads it otherwise)."""
    from rq import job as rq_job
    from rq import utils as rq_utils
    from rq.worker import base as rq_worker

    format_ = rq_utils.utcformat

    def utcformat(dt: datetime.datetime) -> str:
        if dt.year < 1000:
            return format_(dt)
        return dt.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"

    for module in (rq_utils, rq_job, rq_worker):
        module.utcformat = utcformat  # type: ignore[attr-defined]


_resolving_known_serializers()
_parsing_timestamps_in_c()
_formatting_timestamps_in_c()

# The function names RQ stores with collector's jobs. They name no module any more: the pool's workers map them
# to the functions, so jobs queued by any version (and pools of any version) agree on them.
RUN_FUNCTION = "collector.runner.run_job"
CHECK_FUNCTION = "collector.checks.run_check"


def lane_key(queue_key: str, priority: str | None) -> str:
    """The list jobs of `priority` wait in (every push to a lane, and every requeue, goes through here): normal
    jobs in the queue's own list, high and low ones in `<queue>:high` and `<queue>:low` beside it. Anything else
    (no priority: a job queued before lanes existed) is normal."""
    lane = priority if priority in PRIORITIES else DEFAULT_PRIORITY
    return queue_key if lane == DEFAULT_PRIORITY else f"{queue_key}:{lane}"


def wake_key(queue_key: str) -> str:
    """The list a push to any lane of the queue feeds, on which idle pool children wait."""
    return f"{queue_key}:wake"


def claims_key(queue_key: str, worker_name: str) -> str:
    """The list a pool child moves jobs into as it takes them off the queue (its own RQ intermediate list)."""
    return f"{queue_key}:intermediate:{worker_name}"


def priority_of(job: Job | None) -> str:
    """The priority RQ's job `job` was queued with (its meta); normal when it has none."""
    meta = job.meta if job is not None and isinstance(job.meta, dict) else {}
    return str(meta.get("priority") or DEFAULT_PRIORITY)


class LaneQueue(Queue):
    """collector's queue as seen from one lane: its name (so every job's origin, and RQ's registries) is the
    queue's, its key the lane's list, and each push to it wakes a waiting pool child. rq-dashboard lists each lane
    as a queue of its own (`<queue>:high`, `<queue>`, `<queue>:low`)."""

    lane = DEFAULT_PRIORITY

    def __init__(self, name: str = "default", *args: Any, lane: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        self.base_key = self._key
        self.lane = lane or self.lane
        self._key = lane_key(self.base_key, self.lane)

    def push_job_id(self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False) -> None:
        super().push_job_id(job_id, pipeline=pipeline, at_front=at_front)
        pipe: Any = pipeline if pipeline is not None else self.connection
        pipe.sadd(self.redis_queues_keys, self._key)
        lanes.wake(pipe, wake_key(self.base_key))

    @classmethod
    def from_queue_key(cls, queue_key: str, *args: Any, **kwargs: Any) -> Any:
        """The queue of a lane's key (`<queue>:high` is the queue `<queue>`, lane high)."""
        for lane in PRIORITIES:
            suffix = f":{lane}"
            if lane != DEFAULT_PRIORITY and queue_key.endswith(suffix):
                queue = super().from_queue_key(queue_key.removesuffix(suffix), *args, **kwargs)
                queue._key, queue.lane = queue_key, lane
                return queue
        return super().from_queue_key(queue_key, *args, **kwargs)


class RQ:
    """collector's queue on one connection, and RQ's side of its jobs."""

    def __init__(self, connection: Redis, config: Config) -> None:
        self.connection = connection
        self.config = config
        self.queue = LaneQueue(config.queue_name, connection=connection, serializer=JSONSerializer)
        self.lanes = {p: LaneQueue(config.queue_name, connection=connection, serializer=JSONSerializer, lane=p)
                      for p in PRIORITIES}
        self.scheduled_key = self.queue.scheduled_job_registry.key

    def lane(self, priority: str | None) -> LaneQueue:
        """The lane jobs of `priority` are pushed onto (`lane_key` names its list)."""
        return self.lanes[priority if priority in PRIORITIES else DEFAULT_PRIORITY]

    @property
    def lane_keys(self) -> list[str]:
        """Every lane's list, highest priority first."""
        return [queue.key for queue in self.lanes.values()]

    def record_priority(self, job_id: str) -> str | None:
        """The priority the job record `job_id` was submitted with (for a job whose RQ hash is gone)."""
        raw = self.connection.hget(Keys(self.config.key_prefix).job(job_id), "priority")
        return raw.decode() if isinstance(raw, bytes) else raw

    def recreate(self, pipe: Pipeline, job_id: str, *, timeout: int) -> None:
        """Queue a new RQ job for the record `job_id`, whose RQ hash is gone (expired, deleted): on the lane of the
        priority it was submitted with, under the concurrency cap it was submitted under."""
        priority, cap = (raw.decode() if isinstance(raw, bytes) else raw for raw in self.connection.hmget(
            Keys(self.config.key_prefix).job(job_id), ["priority", "concurrency"]))
        self.enqueue(pipe, job_id, timeout=timeout, priority=priority, cap=cap or None)

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

    def failed_job_ids(self) -> list[str]:
        return self.queue.failed_job_registry.get_job_ids(cleanup=False)

    def started_job_ids(self) -> list[str]:
        return self.queue.started_job_registry.get_job_ids(cleanup=False)

    def counts(self, *names: str) -> dict[str, int]:
        """Jobs `queued` (waiting in the queue), `started`, `failed`, `finished` (RQ's registries), by name."""
        readers = {
            "queued": lambda: sum(queue.count for queue in self.lanes.values()),
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
    def enqueue(self, pipe: Pipeline, job_id: str, *, timeout: int, description: str | None = None,
                priority: str | None = None, cap: str | None = None) -> None:
        """Queue `job_id` to run (`RUN_FUNCTION`, no arguments: the id names the record) on the lane of
        `priority` (None: the one its record was submitted with), which its RQ meta keeps for every requeue.
        `cap`: the key of the concurrency cap it counts under, kept in the meta too, so a child knows it with the
        job it takes."""
        priority = priority or self.record_priority(job_id) or DEFAULT_PRIORITY
        self.lane(priority).enqueue_call(
            RUN_FUNCTION,
            job_id=job_id,
            timeout=timeout,
            description=description,
            result_ttl=self.config.record_ttl_s,
            failure_ttl=self.config.failed_record_ttl_s,
            meta={"priority": priority, "cap": cap} if cap else {"priority": priority},
            pipeline=pipe,
        )

    def enqueue_check(self, pipe: Pipeline, check_id: str, *, linger_s: int, description: str) -> None:
        """Queue a connection check at the front (it is short and someone waits for it); `ttl`: never run once
        nobody waits. A check that ran is deleted at once (`result_ttl=0`): the answer went to the caller, and
        in the finished registry it would be counted by rq-dashboard long after its job hash, and so its line
        in the list, had gone. One that failed stays, listed and counted, as long as a failed job does."""
        self.queue.enqueue_call(
            CHECK_FUNCTION, job_id=check_id, timeout=linger_s, ttl=linger_s, result_ttl=0,
            failure_ttl=self.config.failed_record_ttl_s, description=description, at_front=True, pipeline=pipe,
        )

    def requeue(self, pipe: Any, job: Job, *, at_front: bool = False) -> None:
        """Put RQ's job back on its lane as it is (id, function, timeout); `at_front`: first, and only once."""
        lane = self.lane(priority_of(job))
        if at_front:
            pipe.lrem(lane.key, 0, job.id)
        lane._enqueue_job(job, pipeline=pipe, at_front=at_front)

    def requeue_ended(self, pipe: Any, job_id: str, *, job: Job | None, timeout: int) -> None:
        """RQ's side of an ended job queued again by hand: out of the failed and canceled registries, no longer
        expiring, back on the queue; a new RQ job with the same id when its hash is gone (expired, deleted)."""
        pipe.zrem(self.queue.failed_job_registry.key, job_id)
        pipe.zrem(self.queue.canceled_job_registry.key, job_id)
        pipe.zrem(self.queue.finished_job_registry.key, job_id)
        for key in self.lane_keys:
            pipe.lrem(key, 0, job_id)
        if job is None:
            self.recreate(pipe, job_id, timeout=timeout)
        else:
            self.lane(priority_of(job))._enqueue_job(job, pipeline=pipe)  # saves it with no expiry (ttl None)

    def queued_here(self, pipe: Any, job_id: str) -> bool:
        """Whether `job_id` waits in a lane (the caller WATCHes `lane_keys`, so a worker taking it meanwhile
        fails the caller's EXEC)."""
        return any(pipe.lpos(key, job_id) is not None for key in self.lane_keys)

    @staticmethod
    def job_key(job_id: str) -> str:
        """RQ's hash of `job_id` (a concurrency gate writes its status with the record's)."""
        return Job.key_for(job_id)

    @property
    def queue_key(self) -> str:
        """The queue's own list: its normal lane (`lane_keys` has all three)."""
        return self.queue.key

    def claim(self, pipe: Any, job_id: str) -> None:
        """RQ's side of a job claimed to run outside the pool: off its lane, `started`."""
        for key in self.lane_keys:
            pipe.lrem(key, 0, job_id)
        if self.connection.exists(Job.key_for(job_id)):  # never a stub hash for a job RQ lost
            pipe.hset(Job.key_for(job_id), "status", JobStatus.STARTED.value)

    def finish(self, pipe: Any, job: Job, *, ttl: int) -> None:
        """RQ's side of a job that finished outside the pool (a claimed one): `finished`, in the finished registry,
        expiring with its record."""
        job.set_status(JobStatus.FINISHED, pipeline=pipe)
        self.queue.finished_job_registry.add(job, ttl=ttl, pipeline=pipe)
        pipe.expire(job.key, ttl)

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

    def release(self, pipe: Any, job_id: str, *, worker_name: str = "") -> None:
        """Everything a lost worker left of `job_id` in RQ's lists and registries goes: its place in RQ's shared
        intermediate list (and the note of when RQ first saw it there), in the worker's claims, and in the failed
        registry (where RQ's own cleanup may have put it), so RQ never later flags the job failed on its own."""
        pipe.lrem(self.queue.intermediate_queue_key, 0, job_id)
        pipe.delete(self.queue.intermediate_queue.get_first_seen_key(job_id))
        if worker_name:
            pipe.lrem(claims_key(self.queue.key, worker_name), 0, job_id)
        pipe.zrem(self.queue.failed_job_registry.key, job_id)

    def settle_ended(self, pipe: Any, job: Job, *, status: str, ttl: int, worker_name: str = "") -> None:
        """RQ's side of a job whose record already ended when its worker died (killed right after its final
        write): RQ's status matches the record's and expires with it, and no execution is left in the started
        registry for RQ's cleanup to flag failed later."""
        self.forget_executions(pipe, self.executions(job))
        self.release(pipe, job.id, worker_name=worker_name)
        pipe.hset(job.key, "status", status)
        pipe.expire(job.key, ttl)

    def claimed(self, worker_name: str) -> list[str]:
        """The jobs a pool child took off the queue and had not yet started (its claims list)."""
        return [raw.decode() for raw in self.connection.lrange(claims_key(self.queue.key, worker_name), 0, -1)]

    def drop_claims(self, worker_name: str) -> None:
        self.connection.delete(claims_key(self.queue.key, worker_name))

    def queued_ids(self) -> set[str]:
        """Every job id waiting in a lane (one LRANGE each)."""
        with self.connection.pipeline(transaction=False) as pipe:
            for key in self.lane_keys:
                pipe.lrange(key, 0, -1)
            lists = pipe.execute()
        return {raw.decode() for ids in lists for raw in ids}

    def scheduled_ids(self, job_ids: list[str]) -> set[str]:
        """Those of `job_ids` that wait in the scheduled registry."""
        if not job_ids:
            return set()
        scores = self.connection.zmscore(self.scheduled_key, job_ids)
        return {job_id for job_id, score in zip(job_ids, scores, strict=True) if score is not None}

    def claimed_by(self, worker_names: list[str]) -> set[str]:
        """Every job id in the claims lists of `worker_names` (one pipelined LRANGE each)."""
        if not worker_names:
            return set()
        with self.connection.pipeline(transaction=False) as pipe:
            for name in worker_names:
                pipe.lrange(claims_key(self.queue.key, name), 0, -1)
            lists = pipe.execute()
        return {raw.decode() for ids in lists for raw in ids}

    def registered_workers(self) -> list[str]:
        """The names of RQ's registered workers whose registration has not expired."""
        keys = sorted(Worker.all_keys(connection=self.connection))
        if not keys:
            return []
        with self.connection.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            alive = pipe.execute()
        return [key.removeprefix(Worker.redis_worker_namespace_prefix) for key, ok in zip(keys, alive, strict=True)
                if ok]

    def worker_names(self, pool: str) -> list[str]:
        """The RQ worker registrations of `pool`'s children (their names start with the pool's)."""
        return [w.name for w in Worker.all(connection=self.connection, serializer=JSONSerializer)
                if w.name.startswith(pool + ".")]

    def fail(self, pipe: Any, job: Job, *, message: str, stopped: bool = False, worker_name: str = "") -> None:
        """RQ's side of a job that ended without a worker to say so: `failed` (or `stopped`), in the failed
        registry with `message`, for as long as a failed record is kept."""
        job.set_status(JobStatus.STOPPED if stopped else JobStatus.FAILED, pipeline=pipe)
        job._handle_failure(message, pipe, worker_name=worker_name)

    def cancel(self, pipe: Any, job_id: str, *, job: Job | None, ttl: int) -> None:
        """RQ's side of a job canceled before it ran: out of its lane and the scheduled registry, `canceled`."""
        for key in self.lane_keys:
            pipe.lrem(key, 0, job_id)
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


def current_job_cap() -> tuple[str | None, int]:
    """The concurrency cap key the job this worker runs was queued under (None: uncapped), and its timeout (s)."""
    job = get_current_job()
    if job is None:
        return None, 0
    cap = (job.meta or {}).get("cap")
    return (cap if isinstance(cap, str) and cap else None), int(job.timeout or 0)


def timed_out(exc: BaseException) -> bool:
    """Whether RQ's alarm for a job past its timeout ended it: `exc` is the alarm, or was raised inside a driver
    that then failed on its way out (a database connection closed mid-statement) and became the platform's own
    error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, JobTimeoutException):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


__all__ = [
    "CHECK_FUNCTION", "RQ", "RUN_FUNCTION", "JSONSerializer", "Job", "current_job_cap",
    "current_job_id", "timed_out",
]
