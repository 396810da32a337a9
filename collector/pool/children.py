"""What each child of the pool runs: an RQ worker that runs job after job in its own process, tells the
supervisor through shared memory which job it holds, and runs only collector's own job functions: it maps the
function names RQ stores to them, and refuses, unimported, a job that names anything else."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import struct
import time
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from collector import defaults
from collector.errors import ForeignJobError, JobFailedError
from collector.pool.heartbeat import CollectorJob, LeanHeartbeats
from collector.run.checks import run_check
from collector.run.context import REDIS_WAITS, until_written
from collector.run.runner import Runtime, pending_end_answered, run_job, start_with, write_pending_end
from collector.store.rq import CHECK_FUNCTION, RUN_FUNCTION

log = logging.getLogger(__name__)

ID_BYTES = 64
SLOT_BYTES = 2 * ID_BYTES + 8   # the running job's id, its hard deadline, the id of a job to cancel
# Outcomes of a job that waits (or was queued again at once, or parked over its concurrency cap): not failures.
SUSPENDED = ("waiting", "queued", "deferred")
# This attempt lost its lease (the job was recovered and runs elsewhere, or its record is gone): RQ's side of the
# job belongs to the attempt that holds it now, so only this worker's execution is cleaned up.
SUPERSEDED = "superseded"
# The function names RQ stores with collector's jobs, and the functions they name: all a worker runs (both take no
# arguments). A worker looks a name up here rather than importing it, so a queued job runs whichever module its
# function lives in now, and a job naming anything else is refused unimported.
JOB_FUNCTIONS = {RUN_FUNCTION: run_job, CHECK_FUNCTION: run_check}
RULE = f"collector runs only its own job functions ({', '.join(sorted(JOB_FUNCTIONS))}) with no arguments, " \
       "callbacks or webhooks, so the job was refused without importing anything it names"


class Slots:
    """Shared memory, one slot per child: the id of the job the child runs, its hard deadline (epoch seconds),
    and the id of a job the supervisor asks it to cancel.

    The supervisor reads a dead child's slot to learn which job it held, without asking Redis
    (which may be what killed it) and without the child's help.
    """

    def __init__(self, count: int) -> None:
        self._mem = mmap.mmap(-1, count * SLOT_BYTES)

    def _put(self, index: int, offset: int, data: bytes, size: int) -> None:
        start = index * SLOT_BYTES + offset
        self._mem[start : start + size] = data[:size].ljust(size, b"\0")

    def _take(self, index: int, offset: int, size: int) -> bytes:
        start = index * SLOT_BYTES + offset
        return self._mem[start : start + size]

    def set(self, index: int, job_id: str, deadline: float = 0.0) -> None:
        self._put(index, ID_BYTES, struct.pack("d", deadline), 8)
        self._put(index, 0, job_id.encode(), ID_BYTES)

    def get(self, index: int) -> str | None:
        return self._take(index, 0, ID_BYTES).rstrip(b"\0").decode() or None

    def deadline(self, index: int) -> float:
        return struct.unpack("d", self._take(index, ID_BYTES, 8))[0]

    def clear(self, index: int) -> None:
        self._put(index, 0, b"", SLOT_BYTES)

    def ask_cancel(self, index: int, job_id: str) -> None:
        self._put(index, ID_BYTES + 8, job_id.encode(), ID_BYTES)

    def cancel_asked(self, index: int) -> str | None:
        return self._take(index, ID_BYTES + 8, ID_BYTES).rstrip(b"\0").decode() or None


class _WithoutInfo:
    """RQ's worker logger without its INFO lines, while a job is dequeued and run: RQ's three lines per job
    (dequeued, `Job OK`, result kept) repeat what collector's own job-event lines say, tagged with the job id
    and platform. Warnings, errors and debug lines pass."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


def refusal(job: Job) -> str | None:
    """Why `job` must not run, or None when it is a plain call of one of collector's job functions.

    Anyone who can write to Redis can put a job there that names any importable function (`os.system`), RQ
    callbacks, webhooks, or a pickled payload: a worker reads what a job names before importing anything."""
    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        return f"job {job.id}: its payload is not JSON; {RULE}"
    if not isinstance(func_name, str) or func_name not in JOB_FUNCTIONS or instance is not None:
        return f"job {job.id} names the function {str(func_name)[:200]!r}; {RULE}"
    if args or kwargs:
        return f"job {job.id} passes arguments to {func_name}; {RULE}"
    # RQ imports a callback by the name the job carries, and posts webhooks to the URLs it carries.
    callbacks = [name for name in (job._success_callback_name, job._failure_callback_name,
                                   job._stopped_callback_name) if name]
    if callbacks:
        return f"job {job.id} names the callback(s) {[str(n)[:200] for n in callbacks]!r}; {RULE}"
    if job.webhooks:
        return f"job {job.id} carries webhooks; {RULE}"
    return None


class PoolJob(CollectorJob):
    """A job as the pool's workers run it: RQ asks for `func` right before calling it, and gets it only for a job
    that `refusal` passes, resolved through `JOB_FUNCTIONS` (nothing the job names is imported); callbacks and
    webhooks are never imported or sent."""

    @property
    def func(self) -> Any:
        reason = refusal(self)
        if reason is not None:
            raise ForeignJobError(reason)
        return JOB_FUNCTIONS[self.func_name]

    @property
    def success_callback(self) -> None:  # type: ignore[override]
        return None

    @property
    def failure_callback(self) -> None:  # type: ignore[override]
        return None

    @property
    def stopped_callback(self) -> None:  # type: ignore[override]
        return None

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        return None


class CollectorWorker(LeanHeartbeats, SimpleWorker):
    """An RQ worker that runs jobs in its own process and tells the supervisor which job it holds."""

    job_class = PoolJob
    slots: Slots | None = None
    slot_index = 0
    runtime: Runtime | None = None
    max_connection_wait_time = 5.0   # reconnect soon after a Redis outage (RQ's default backs off to 60 s)

    parent_pid = 0

    @contextlib.contextmanager
    def _log_to(self, logger: Any) -> Any:
        before, self.log = self.log, logger
        try:
            yield
        finally:
            self.log = before

    def _quiet(self) -> Any:
        return self._log_to(_WithoutInfo(logging.getLogger("rq.worker")))

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        self._ignore_terminal()

    def request_stop(self, signum: int, frame: Any) -> None:
        super().request_stop(signum, frame)
        self._ignore_terminal()

    @staticmethod
    def _ignore_terminal() -> None:
        """A child stops when its supervisor says so (SIGTERM). A terminal's Ctrl-C reaches every process of the
        foreground group, and RQ takes a second one as a cold shutdown that breaks the running job off: the
        supervisor, which gets the same Ctrl-C, gives running jobs their grace instead."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send_start(self, job: Job, commands: list[Any]) -> bool:
        """The runner's start of a job it will run, with the worker's: not for a job that is refused, nor for one
        under a concurrency cap (its slot is taken before its start is written)."""
        if self.runtime is None or job.func_name != RUN_FUNCTION or refusal(job) is not None:
            return False
        if isinstance(job.meta, dict) and job.meta.get("cap"):
            return False
        start_with(self.runtime, job.id, commands)
        return True

    def _ends_with_take(self) -> bool:
        """Whether a finished job's end goes with the take of the next job: not once the worker was asked to stop."""
        return not self._stop_requested and len(self.queues) == 1 and hasattr(self.queue_class, "apply_then_take")

    def send_end(self, job: Job, commands: list[Any]) -> list[Any] | None:
        """A finished job's end: the runner's own (fenced by its lease, left in `pending_end`), RQ's writes
        `commands` and the take of the next job, in one script. `[the answer of the last command]`, or None when
        not sent that way (RQ's writes are then sent as they are, after the runner's)."""
        runtime = self.runtime
        pending = runtime.pending_end if runtime is not None else None
        if pending is not None and pending.job_id != job.id:
            pending = None
        if not self._ends_with_take():
            if runtime is not None and not write_pending_end(runtime):
                return self._superseded_end(job)
            return None
        queue_class: Any = self.queue_class
        fenced = (pending.record, pending.fenced) if pending is not None else None
        try:
            last, answer = queue_class.apply_then_take(self.connection, self.queues[0].key, commands, fenced)
        except REDIS_WAITS as exc:
            # Lost in flight (a failover, say): each part is sent again alone once Redis answers (the runner's is
            # not refused when it was written already), and whatever the script may have taken goes back from
            # the claims before the next take.
            log.warning("Worker %s: the end of its job was not sent with the take of the next (%s); sent alone",
                        self.name, exc)
            if runtime is not None and not write_pending_end(runtime):
                return self._superseded_end(job)
            wait_s = runtime.config.redis_wait_s if runtime is not None else 0.0
            return until_written(lambda: self._apply(commands), wait_s=wait_s, what=f"worker {self.name}: job end")
        if runtime is not None and pending is not None:
            runtime.pending_end = None
            if not pending_end_answered(runtime, pending, pending.lease.answered(answer)):
                return self._superseded_end(job)
        return [last]

    def _superseded_end(self, job: Job) -> list[Any]:
        """A finished run that lost its lease before its end was written: RQ's side of the job belongs to the
        attempt that holds it now, so only this worker's execution is cleaned up (as `handle_job_failure` does)."""
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe)
            pipe.hset(self.key, "state", WorkerStatus.IDLE.value)
            pipe.exists(WORKERS_SUSPENDED)
            return pipe.execute()[-1:]

    def _apply(self, commands: list[Any]) -> list[Any]:
        """A transaction's queued `commands` sent as one: `[the answer of the last]`."""
        with self.connection.pipeline() as pipe:
            for args, options in commands:
                pipe.execute_command(*args, **options)
            return pipe.execute()[-1:]

    def teardown(self) -> None:
        """A job taken with the last one's end and not run goes back to the head of its lane."""
        queue_class: Any = self.queue_class
        if getattr(queue_class, "_prefetched", None) is not None and len(self.queues) == 1:
            try:
                queue_class.give_back(self.connection, self.queues[0].key)
            except redis.RedisError as exc:  # the supervisor settles the claims of a child that exited
                log.warning("Worker %s: could not give back the job it had taken next (%s)", self.name, exc)
        super().teardown()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        with self._quiet():
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def run_maintenance_tasks(self) -> None:
        with self._log_to(logging.getLogger("rq.worker")):  # its `cleaning registries` line stays
            super().run_maintenance_tasks()

    def execute_job(self, job: Job, queue: Queue) -> None:
        with self._quiet():
            self._execute_job(job, queue)

    def _execute_job(self, job: Job, queue: Queue) -> None:
        if self.parent_pid and os.getppid() != self.parent_pid:
            # Orphaned (where PR_SET_PDEATHSIG is not available): the reaper settles our pool's jobs elsewhere,
            # so give this one back untouched and leave.
            with self.connection.pipeline() as pipe:
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
                queue.push_job_id(job.id, pipeline=pipe, at_front=True)
                pipe.execute()
            os._exit(1)
        if self.runtime is not None:
            self.runtime.outcome = None
            self.runtime.ends_with_worker = self._ends_with_take()
        if self.slots is not None:
            timeout = job.timeout if job.timeout and job.timeout > 0 else None
            deadline = time.time() + timeout + defaults.TIMEOUT_GRACE_S if timeout else 0.0
            self.slots.set(self.slot_index, job.id, deadline)
        try:
            super().execute_job(job, queue)
        finally:
            if self.runtime is not None and self.runtime.pending_end is not None:
                write_pending_end(self.runtime)  # a path that did not send it (RQ's own handling of a repeat)
            if self.slots is not None:
                self.slots.clear(self.slot_index)

    @property
    def _outcome(self) -> Any:
        """How the runner says the job in hand ended (None before it says, or without a runtime)."""
        return self.runtime.outcome if self.runtime is not None else None

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ writes the job's last heartbeat as a run ends: not for an attempt another one superseded, whose job
        hash is that attempt's (or gone: the write would leave a stub without expiry)."""
        outcome = self._outcome
        if outcome is not None and outcome.status == SUPERSEDED:
            job.ended_at = now()
            return
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        outcome = self._outcome
        if outcome is not None and outcome.status in SUSPENDED:
            log.info("Worker %s: job %s is %s; worker free", self.name, job.id, outcome.status)
            return  # a wait is no error: no traceback in the log
        if outcome is not None and outcome.status == SUPERSEDED:
            log.warning("Worker %s: job %s stopped: another attempt holds it; this one writes nothing more",
                        self.name, job.id)
            return
        if isinstance(exc_info[1], ForeignJobError | DeserializationError):
            job.retries_left = 0  # a retry count the job carries must not make it come back
            log.error("Worker %s: refused job %s: %s", self.name, job.id,
                      getattr(exc_info[1], "message", "its payload is not JSON"))
            return
        if isinstance(exc_info[1], JobFailedError):
            # The runner logged the job's end in one line and recorded the traceback: RQ's own ERROR line would
            # repeat it as twenty lines of traceback of the runner, not of the platform.
            log.debug("Worker %s: job %s ended by %s", self.name, job.id, exc_info[1])
            for handler in self._exc_handlers:  # handlers pushed on the worker still run, as in RQ
                if handler(job, *exc_info) is False:
                    break
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        """RQ's failure handling, except for jobs the runner scheduled for a retry or found cancelled."""
        if self.runtime is not None and self.runtime.pending_end is not None:
            write_pending_end(self.runtime)  # the run finished; what failed came after it: its end is written first
        outcome = self._outcome
        if outcome is not None and outcome.status in (*SUSPENDED, SUPERSEDED):
            # Waiting (or queued again already): the runner wrote the record and RQ's status; only the
            # execution is left to clean up, and this attempt counts as no failure. Superseded: the attempt that
            # holds the lease now owns the record and RQ's status; this one cleans up its execution only.
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe)
                pipe.execute()
            return
        if outcome is not None and outcome.status in ("scheduled", "canceled"):
            # The runner already put a retry in the scheduled registry and set RQ's status (with its record,
            # in one transaction); only the execution is left to clean up.
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe)
                if outcome.status == "canceled":
                    job.set_status(JobStatus.CANCELED, pipeline=pipe)
                    queue.canceled_job_registry.add(job, ttl=job.failure_ttl or 0, pipeline=pipe)
                self.increment_failed_job_count(pipe)
                pipe.execute()
            return
        if outcome is not None and outcome.status == "stopped":
            self._stopped_job_id = job.id  # RQ then records the job as stopped, not failed
        super().handle_job_failure(job, queue, started_job_registry, exc_string)
