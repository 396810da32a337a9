"""The queue a pool child takes jobs with: from the priority lanes into its own claims list, its next job taken
with the end of the last."""

from __future__ import annotations

from typing import Any

import redis
from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from collector.store import lanes
from collector.store.lanes import PRIORITIES
from collector.store.rq import LaneQueue, claims_key, lane_key, priority_of, wake_key


class ClaimingQueue(LaneQueue):
    """collector's queue as a pool child takes jobs off it: from the lanes in priority order (`store/lanes.py`),
    moved into the child's own claims list instead of RQ's intermediate list that every worker shares. A job is then
    always in a lane, in exactly one child's claims, or started: when the child dies, even between taking a job and
    noting it in its slot, its supervisor (or the reaper, for a dead pool) reads the claims and puts the job back.
    RQ's start transaction removes the job from `intermediate_queue_key`, which here names the claims list (one per
    child, whichever lane the job came from). Made per child by `claiming_queue`."""

    claimant = ""
    age_s = 0.0                   # a job waiting this long at a lane's head is taken as if one lane higher
    _taken: bytes | None = None   # the id the last move took, while RQ's dequeue loop runs
    _unsure = False               # a move failed in flight: the job it may have taken is in the claims, unrun
    _fetched: dict[bytes, bytes] = {}  # the job hash the last move read with the take ({}: gone)
    # A job taken into the claims with the last job's end (`apply_then_take`): the next dequeue runs it.
    _prefetched: tuple[bytes, bytes, dict[bytes, bytes]] | None = None

    @property
    def intermediate_queue_key(self) -> str:
        return claims_key(self.base_key, self.claimant)

    @classmethod
    def _taker(cls, queue_key: str) -> lanes.Taker:
        return lanes.Taker([lane_key(queue_key, p) for p in PRIORITIES], claims=claims_key(queue_key, cls.claimant),
                           wake=wake_key(queue_key), age_s=cls.age_s, job_prefix=Job.redis_job_namespace_prefix,
                           fetch=True)

    @classmethod
    def dequeue_any(cls, queues: Any, timeout: int | None, connection: Redis, job_class: Any = None,
                    serializer: Any = None, death_penalty_class: Any = None) -> Any:
        """RQ's dequeue with the job hash read by the take itself (one round trip, not two)."""
        cls._taken = None
        queues = list(queues)
        if len(queues) != 1:
            return super().dequeue_any(queues, timeout, connection, job_class=job_class, serializer=serializer,
                                       death_penalty_class=death_penalty_class)
        job_cls = job_class or cls.job_class
        while True:
            result = cls.lmove(connection, queues[0].key, timeout)
            if result is None:
                return None
            raw, cls._fetched = cls._fetched, {}
            if not raw:
                continue  # its job hash is gone: the next move drops it from the claims
            lane, job_id = (part.decode() if isinstance(part, bytes) else part for part in result)
            queue = cls.from_queue_key(lane, connection=connection, job_class=job_cls, serializer=serializer,
                                       death_penalty_class=death_penalty_class)
            job = job_cls(job_id, connection=connection, serializer=serializer)
            job.restore(raw)
            return job, queue

    @classmethod
    def lpop(cls, queue_keys: list[str], timeout: int | None, connection: Redis | None = None) -> Any:
        """RQ pops (no intermediate list at all) where it cannot tell the server's version; a child claims always."""
        if len(queue_keys) == 1 and connection is not None:
            return cls.lmove(connection, queue_keys[0], timeout)
        return super().lpop(queue_keys, timeout, connection=connection)

    @classmethod
    def lmove(cls, connection: Redis, queue_key: str, timeout: int | None) -> Any:
        """The next job of the queue `queue_key`'s lanes, moved into the claims: `(lane key, job id)`."""
        claims = claims_key(queue_key, cls.claimant)
        if cls._taken is not None:
            # RQ's loop came back for another: the job last taken has no job hash any more and is skipped.
            connection.lrem(claims, 1, cls._taken)
            cls._taken = None
        if cls._prefetched is not None:
            lane, cls._taken, cls._fetched = cls._prefetched
            cls._prefetched = None
            return lane, cls._taken
        if cls._unsure:
            cls.give_back(connection, queue_key)
        taker = cls._taker(queue_key)
        try:
            result = taker.take(connection, timeout)
        except (redis.ConnectionError, redis.TimeoutError):
            cls._unsure = True
            raise
        if result is None:
            if timeout is None:
                return None
            raise DequeueTimeout(timeout, queue_key)
        lane, cls._taken = result
        cls._fetched = taker.job_hash
        return lane, cls._taken

    @classmethod
    def give_back(cls, connection: Redis, queue_key: str) -> None:
        """Nothing runs now, so whatever the claims hold (taken by a move whose answer was lost, or prefetched and
        not run) goes back to the head of its lane."""
        claims = claims_key(queue_key, cls.claimant)
        while (last := connection.lindex(claims, -1)) is not None:
            try:
                job = Job.fetch(last.decode(), connection=connection, serializer=JSONSerializer)
            except NoSuchJobError:
                connection.lrem(claims, 1, last)
                continue
            connection.lmove(claims, lane_key(queue_key, priority_of(job)), "RIGHT", "LEFT")
        cls._unsure, cls._prefetched = False, None

    @classmethod
    def apply_then_take(cls, connection: Redis, queue_key: str, commands: list[Any],
                        fenced: tuple[str, list[Any]] | None = None) -> tuple[Any, int]:
        """Apply `commands` (a job's end transaction, as queued) and take the next job into the claims with its job
        hash, in one script; the next dequeue runs the job taken. With `fenced` (a job record's key and a lease's
        fenced writes to it), those come first, and nothing is applied or taken when the fence refuses. Returns the
        answer of the last command and the fenced answer (1 without `fenced`). The take comes when the worker would
        take its next job anyway, right after this one's end: no job of a higher lane queued later is passed over.
        Until it runs, the job taken sits in this child's claims, where the supervisor (or the reaper) settles it
        when the child dies."""
        taker = cls._taker(queue_key)
        cls._unsure = True  # until the answer is read: a script lost in flight may have taken a job
        taken, last, answer = taker.take_after(connection, commands, fenced)
        cls._unsure = False
        if taken is not None:
            cls._prefetched = (taken[0], taken[1], taker.job_hash)
        return last, answer


def claiming_queue(worker_name: str, *, age_s: float = 0.0) -> type[Queue]:
    """The queue class of the pool child `worker_name`: it claims jobs into its own list, lanes aged by `age_s`."""
    return type("ClaimingQueue", (ClaimingQueue,), {"claimant": worker_name, "age_s": age_s, "__module__": __name__})
