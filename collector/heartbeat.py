"""Fewer Redis round trips per job for RQ workers: heartbeats in one round trip, repeats within a second skipped.

An RQ SimpleWorker makes about 18 round trips per job; a third of them are its own bookkeeping written
twice in a row: the worker's heartbeat (HSET, then EXPIRE: two round trips) is sent after each job and
again before and after each dequeue, and its state is set to `idle` at the end of a job and again at
the start of the next dequeue. The mixin sends each heartbeat as one pipeline, skips a default heartbeat
when one was sent less than HEARTBEAT_MIN_GAP_S ago (the worker key lives for minutes), and skips setting
a state the worker already has. Heartbeats RQ sends inside its own pipelines, or with an explicit TTL
(at the start of a job), are never skipped. A finished job's last heartbeat is saved with its end state
instead of one round trip before it. And since collector never enqueues a job with RQ dependencies,
a finished job's end is written without RQ's WATCH of, and look-up in, its dependents set.
"""

from __future__ import annotations

import time
from typing import Any

from rq.job import JobStatus
from rq.utils import now

HEARTBEAT_MIN_GAP_S = 1.0  # far below RQ's worker TTL (420 s): a skipped repeat never lets the key expire


class LeanHeartbeats:
    """Mixin for an rq worker class (put it first): same writes, fewer round trips."""

    _last_beat_at = 0.0
    _state_written: str | None = None

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
        records). A repeating job still gets RQ's own handling."""
        if job.repeats_left:
            super().handle_job_success(job, queue, started_job_registry)  # type: ignore[misc]
            return
        worker: Any = self
        with worker.connection.pipeline() as pipeline:
            pipeline.multi()
            worker.increment_successful_job_count(pipeline=pipeline)
            worker.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            result_ttl = job.get_result_ttl(worker.default_result_ttl)
            if result_ttl != 0:
                execution = worker.execution
                job._handle_success(
                    result_ttl,
                    pipeline=pipeline,
                    worker_name=worker.name,
                    execution_id=execution.id if execution else None,
                    execution_started_at=execution.created_at if execution else None,
                    execution_ended_at=job.ended_at,
                )
            job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            worker.cleanup_execution(job, pipeline=pipeline)
            pipeline.execute()
