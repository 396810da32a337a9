"""Fewer Redis round trips per job for RQ workers: heartbeats in one round trip, repeats within a second skipped.

An RQ SimpleWorker makes about 18 round trips per job; a third of them are its own bookkeeping written
twice in a row: the worker's heartbeat (HSET, then EXPIRE: two round trips) is sent after each job and
again before and after each dequeue, and its state is set to `idle` at the end of a job and again at
the start of the next dequeue. The mixin sends each heartbeat as one pipeline, skips a default heartbeat
when one was sent less than HEARTBEAT_MIN_GAP_S ago (the worker key lives for minutes), and skips setting
a state the worker already has. Heartbeats RQ sends inside its own pipelines, or with an explicit TTL
(at the start of a job), are never skipped. A finished job's last heartbeat is saved with its end state
instead of one round trip before it, and the take of the next job may go with it (`send_end`). A finished
job gets no RQ results stream (its record holds the result); a failed one keeps RQ's, which the dashboard
shows the traceback from. And since collector never enqueues a job with RQ dependencies, a finished job's end
is written without RQ's WATCH of, and look-up in, its dependents set.

Around a job, RQ's two start transactions (the execution record and registry entry, then the worker's and
the job's state) and the PERSIST of the job key that `Job.perform` sends are one transaction, or go with the
job's own start in one script (`send_start`); the `idle` state after a finished job is saved in its end
transaction; and the suspension check between jobs is a plain EXISTS (RQ adds a heartbeat to it in a
transaction; the mixin's heartbeat comes at most once a second).
"""

from __future__ import annotations

import time
from typing import Any

from rq import utils as rq_utils  # its `utcformat` looked up when called: `store/rq.py` replaces it
from rq.executions import Execution
from rq.job import Job, JobStatus, _job_stack
from rq.suspension import WORKERS_SUSPENDED, is_suspended
from rq.utils import now
from rq.worker import WorkerStatus

HEARTBEAT_MIN_GAP_S = 1.0  # far below RQ's worker TTL (420 s): a skipped repeat never lets the key expire


class LeanHeartbeats:
    """Mixin for an rq worker class (put it first): same writes, fewer round trips."""

    _last_beat_at = 0.0
    _state_written: str | None = None
    _prepared: Any = None  # the pipeline prepare_execution filled and prepare_job_execution sends
    _not_suspended = False  # the last job's end transaction found the workers not suspended

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)  # type: ignore[misc]
            return
        if timeout is None and time.monotonic() - self._last_beat_at < HEARTBEAT_MIN_GAP_S:
            return
        with self.connection.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
            super().heartbeat(timeout, pipeline=pipe)  # type: ignore[misc]
            pipe.execute()
        self._last_beat_at = time.monotonic()

    def handle_execution_ended(self, job: Any, queue: Any, heartbeat_ttl: int) -> None:
        """RQ writes the job's heartbeat as its own round trip here, right before `handle_job_success` saves
        the whole job hash (heartbeat included) in its transaction: on success, keep it for that save."""
        if job.get_status(refresh=False) == JobStatus.FAILED:
            super().handle_execution_ended(job, queue, heartbeat_ttl)  # type: ignore[misc]
            return
        job.ended_at = now()
        job.last_heartbeat = job.ended_at

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is None and state == self._state_written:
            self._state = state  # type: ignore[attr-defined]
            return
        super().set_state(state, pipeline=pipeline)  # type: ignore[misc]
        # A pipeline may yet be discarded: only a direct write is known to have happened.
        self._state_written = state if pipeline is None else None

    def handle_job_success(self, job: Any, queue: Any, started_job_registry: Any) -> None:
        """RQ's success bookkeeping in one transaction, without its dependents check (WATCH + SMEMBERS): no
        collector job has dependents (nothing is enqueued with `depends_on`; sub-jobs are tracked on the
        records), so neither the EXPIRE of its (absent) dependents and dependencies keys. The job hash gets the three
        fields its end changes (status, ended_at, last_heartbeat) where RQ saves the whole job again, its payload
        compressed anew (near a tenth of a worker's time per job), and where RQ writes the status once more on its
        own. The worker's `idle` state (a round trip of its own in RQ, right after) goes with it, and so does the
        suspension check before the next dequeue. RQ's results stream (`rq:results:<id>`) is not written: the
        record holds the result, and a Redis stream costs 4 kB however little it holds.
        A repeating job still gets RQ's own handling."""
        if job.repeats_left:
            super().handle_job_success(job, queue, started_job_registry)  # type: ignore[misc]
            return
        worker: Any = self
        with worker.connection.pipeline() as pipeline:
            pipeline.multi()
            worker.increment_successful_job_count(pipeline=pipeline)
            worker.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            result_ttl = job.get_result_ttl(worker.default_result_ttl)
            if result_ttl != 0:  # RQ's Job._handle_success, the status saved with the job, without its Result
                job._status = JobStatus.FINISHED
                pipeline.hset(job.key, mapping={"status": JobStatus.FINISHED.value,
                                                "ended_at": rq_utils.utcformat(job.ended_at),
                                                "last_heartbeat": rq_utils.utcformat(job.last_heartbeat)})
                job.finished_job_registry.add(job, result_ttl, pipeline)
            if result_ttl is not None and result_ttl > 0:
                pipeline.expire(job.key, result_ttl)
            else:
                job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            worker.cleanup_execution(job, pipeline=pipeline)
            pipeline.hset(worker.key, "state", WorkerStatus.IDLE.value)
            pipeline.exists(WORKERS_SUSPENDED)
            sent = self.send_end(job, pipeline.command_stack)
            if sent is None:
                *_, suspended = pipeline.execute()
            else:
                [suspended] = sent
        worker._state = self._state_written = WorkerStatus.IDLE
        self._not_suspended = not suspended

    def send_end(self, job: Any, commands: list[Any]) -> list[Any] | None:
        """Send a finished job's end writes `commands` (a transaction's queued commands) with the take of the next
        job, in one script: `[the answer of the last command]`, or None (not sent: the transaction is sent as it
        is, and the worker takes its next job as RQ does)."""
        return None

    def prepare_execution(self, job: Any) -> Any:
        """RQ's execution record and registry entry, queued for `prepare_job_execution` to send with its writes."""
        worker: Any = self
        pipeline = worker.connection.pipeline()
        worker.execution = Execution.create(job, worker.get_heartbeat_ttl(job), pipeline=pipeline,
                                            worker_name=worker.name)
        worker._state, self._state_written = WorkerStatus.BUSY, None  # written by prepare_job_execution
        self._prepared = pipeline
        return worker.execution

    def prepare_job_execution(self, job: Any, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's writes before a job runs, in one transaction with the execution record and the PERSIST of the
        job key that `Job.perform` would send next (`CollectorJob` then skips it). The worker's state, current
        job, working time and heartbeat are one HSET (four in RQ); the job's heartbeat goes with its start
        fields (RQ writes `last_heartbeat` twice)."""
        worker: Any = self
        pipeline, self._prepared = self._prepared, None
        if pipeline is None:
            super().prepare_job_execution(job, remove_from_intermediate_queue)  # type: ignore[misc]
            return
        with pipeline:
            heartbeat_ttl = worker.get_heartbeat_ttl(job)
            worker.current_job_working_time = 0
            worker.last_heartbeat = now()
            pipeline.hset(worker.key, mapping={
                "state": WorkerStatus.BUSY.value,
                "current_job": job.id,
                "current_job_working_time": 0,
                "last_heartbeat": rq_utils.utcformat(worker.last_heartbeat),
            })
            pipeline.expire(worker.key, heartbeat_ttl)
            job.prepare_for_execution(worker.name, pipeline=pipeline)
            if remove_from_intermediate_queue:
                pipeline.lrem(worker.queue_class(job.origin, connection=worker.connection).intermediate_queue_key,
                              1, job.id)
            pipeline.persist(job.key)
            if not self.send_start(job, pipeline.command_stack):
                pipeline.execute()
        job.persisted = True
        worker.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def send_start(self, job: Any, commands: list[Any]) -> bool:
        """Send the worker's start writes `commands` (a transaction's queued commands) with the job's own start, in
        one script; False when it does not (the transaction is sent as it is)."""
        return False

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's check, skipped when the last job's end transaction made it; else one EXISTS while not
        suspended (RQ sends a heartbeat with it in a transaction; the mixin's comes at most once a second)."""
        worker: Any = self
        if self._not_suspended:
            self._not_suspended = False
            self.heartbeat()
            return
        if not is_suspended(worker.connection):
            self.heartbeat()
            return
        super().check_for_suspension(burst)  # type: ignore[misc]


class CollectorJob(Job):
    """An RQ job that skips the PERSIST of its key in `perform` when the worker sent it with its start writes."""

    persisted = False

    def perform(self) -> Any:
        if not self.persisted:
            return super().perform()
        _job_stack.push(self)
        try:
            self._result = self._execute()
        finally:
            assert self is _job_stack.pop()
        return self._result
