"""What a worker runs for one job: load the record, build the platform, call `_run`, write the outcome."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import redis

from collector import egress, logs, rates
from collector.config import Config
from collector.errors import (
    CollectorError,
    JobCancelledError,
    JobFailedError,
    JobSuspended,
    LeaseLostError,
    TransientError,
)
from collector.masking import mask_text, mask_value
from collector.resources import databases, reach
from collector.run.context import RunContext, until_written
from collector.run.throttle import JobThrottle
from collector.sealing import Sealer
from collector.specs.registry import Registry
from collector.specs.secrets import merge_secrets, secret_values
from collector.store import events, metrics, starts
from collector.store.buckets import Buckets
from collector.store.connection import connect_to
from collector.store.records import ENDED, JobStore, Lease, decode_fields
from collector.store.rq import RQ, current_job_cap, current_job_id, timed_out
from collector.store.state import States
from collector.types import iso
from collector.workflows.cancel import cancel_children
from collector.workflows.caps import Caps
from collector.workflows.children import JobLinks, resume_parent
from collector.workflows.ends import Ends, retry_delay, timeout_message
from collector.workflows.notify import NAMED
from collector.workflows.waiting import input_secrets, suspend
from storage.base import Storage

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
    """How the last job a worker ran ended, for the worker's RQ bookkeeping."""

    # finished, failed, stopped, canceled, scheduled (a retry after `delay_s`), waiting (for input or children:
    # the worker is free), queued (its children ended while it suspended: queued again at once), or superseded
    # (this attempt lost its lease on the record: another attempt owns the job, RQ's side included), or deferred
    # (parked over its concurrency cap before it started: the worker is free)
    status: str
    delay_s: float = 0.0


@dataclasses.dataclass
class Runtime:
    """What a worker process holds for every job it runs: built once, before the first job."""

    config: Config
    connection: redis.Redis
    registry: Registry
    worker_name: str = ""
    pool_name: str = ""
    # Jobs take tokens of their rate limits (off for the test kit's dry runs, which answer from recordings).
    throttled: bool = True
    # Told the original, unmasked exception of a failed job. Only the local runner sets it (`collector run
    # --pdb` debugs that exception); workers leave it unset, so what leaves them stays masked.
    on_failure: Callable[[BaseException], None] | None = None
    # Whether a finished run saves its incremental state: a local run (`collector run`) reads a state key's saved
    # state but must not move the bookmark of the runs the pool makes.
    saves_state: bool = True

    def __post_init__(self) -> None:
        # The connections and data root the platforms resolve against: the pool loaded them at start-up.
        self.reach = reach.ensure(self.config)
        egress.install(egress.EgressPolicy.from_config(self.config))  # what this process's jobs may reach
        self.store = JobStore(self.connection, self.config)
        self.sealer = Sealer(self.config.secret_key) if self.config.secret_key else None
        self.rq = RQ(self.connection, self.config)
        self.buckets = Buckets(self.connection, self.store.keys)  # the rate limits, shared by every pool
        self.outcome: Outcome | None = None
        self.current: RunContext | None = None  # the context of the job running now, for cancel signals
        self.links = JobLinks(connection=self.connection, config=self.config, registry=self.registry)
        self.caps = Caps(connection=self.connection, config=self.config, registry=self.registry)
        self.log_events: events.JobEventsHandler | None = None
        # The start the worker wrote with its own, in one script (`start_with`): job id, the record's
        # START_FIELDS as read, the attempt number, the lease token.
        self.started: tuple[str, list[Any], int, str] | None = None
        # Set by a pool child that sends a finished job's end with its own (`PendingEnd`): the runner then leaves
        # the end of a plain finished job (no parent, no concurrency cap) in `pending_end` instead of sending it.
        self.ends_with_worker = False
        self.pending_end: PendingEnd | None = None


@dataclasses.dataclass
class PendingEnd:
    """A finished job's end, made but not sent: its worker sends it with its own end writes and the take of the
    next job (`send_end`), or alone (`write_pending_end`); `ended` then does what follows the write."""

    lease: Lease
    fenced: list[Any]          # the lease's fenced writes (`Lease.fenced`)
    ended: Callable[[], None]  # once written: the `finished` log line

    @property
    def job_id(self) -> str:
        return self.lease.job_id

    @property
    def record(self) -> str:
        """The job record's key."""
        return self.lease.store.keys.job(self.lease.job_id)


_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Make `runtime` the one `run_job` uses in this process."""
    global _runtime
    _runtime = runtime
    # ctx.log lines onto the job's events, fenced by the running attempt's lease
    runtime.log_events = events.keep_platform_logs(runtime.connection, runtime.store.keys)
    with contextlib.suppress(redis.RedisError):  # loaded on first use otherwise
        runtime.store.load_scripts()
        starts.load(runtime.connection)


def current_runtime() -> Runtime:
    """This process's runtime; built from the environment on first use when no pool installed one."""
    global _runtime
    if _runtime is None:
        config = Config.from_env()
        if not config.redis_configured:
            raise CollectorError("COLLECTOR_REDIS_URL is not set; the worker does not know which Redis to use")
        connection = connect_to(config, blocking=True)
        _runtime = Runtime(config, connection, Registry.discover(config.platforms_package))
    return _runtime


def run_job() -> Any:
    """The function RQ calls. It takes no arguments, so nothing about the job shows in RQ's call string."""
    job_id = current_job_id("run_job")
    runtime = current_runtime()
    cap, timeout_s = current_job_cap()
    if cap is not None:
        _admit(runtime, job_id, cap=cap, timeout_s=timeout_s)
    return execute(job_id, runtime)


def _admit(runtime: Runtime, job_id: str, *, cap: str, timeout_s: float) -> None:
    """Take a slot of the job's concurrency cap, or park the job (`deferred`) and free the worker for the next."""
    admitted = until_written(lambda: runtime.caps.admit(job_id, cap=cap, timeout_s=timeout_s),
                             wait_s=runtime.config.redis_wait_s, what=f"job {job_id}: concurrency slot")
    if not admitted:
        runtime.outcome = Outcome("deferred")
        raise JobFailedError(f"job {job_id} is parked until a slot of {cap} frees; its worker is free")


START_FIELDS = ("platform_id", "settings", "secrets", "status", "checkpoint", "retry", "max_attempts",
                "cancel_requested_at", "canceled_by", "timeout_s", "inputs", "parent_id", "children", "resumes",
                "notify", "client_id", "schedule_id", "concurrency", "state_key", "state_pending")


def execute(job_id: str, runtime: Runtime) -> Any:
    """Run one job to its end and record the outcome; re-raises a masked error when it did not finish."""
    runtime.outcome = Outcome("failed")
    got, attempt, token = _start(runtime, job_id)
    ctx = _context(runtime, job_id, got, attempt, token)
    storages: list[Storage] = []
    ran = False
    try:
        if got.get("cancel_requested_at"):
            # A cancel came while an earlier attempt ran, and reached it too late to stop its retry: this
            # attempt does not run at all.
            raise JobCancelledError("a cancel was asked for before this attempt started")
        platform = _build(runtime, ctx, got, storages)
        result = mask_value(platform._run(ctx), ctx.secrets)  # RQ stores the result too
        ran = True
    except JobSuspended as suspended:
        _wait(runtime, ctx, suspended, got)
    except LeaseLostError:
        _superseded(runtime, ctx)
    except BaseException as exc:
        _fail(runtime, ctx, exc, got)
    finally:
        _release(runtime, ctx, storages, ran=ran)
    signal.alarm(0)
    if ctx.lease_lost:  # the platform saw `ctx.cancelled` raise, swallowed it and returned
        _superseded(runtime, ctx)
    if ctx.should_stop:  # the platform noticed `ctx.cancelled` and returned early
        _end(runtime, ctx, Outcome("stopped"), {"result": result}, got)
        raise JobFailedError(f"job {job_id} stopped on request")
    _end(runtime, ctx, Outcome("finished"), {"result": result}, got)
    return result


def start_with(runtime: Runtime, job_id: str, commands: Sequence[tuple[Any, ...]]) -> None:
    """Write the start of `job_id` (as `_start` does) with its worker's own start writes `commands` (a pipeline's
    command stack), one script in one round trip; `_start` then takes the start as written."""
    token = secrets.token_hex(8)
    # Redis may go away between the take and this write (a failover): wait for it rather than fail a job that
    # never ran; RQ's writes in `commands` are all safe to apply twice.
    values, attempt = until_written(lambda: _write_start(runtime, job_id, token, before=commands),
                                    wait_s=runtime.config.redis_wait_s, what=f"job {job_id}: start")
    runtime.started = (job_id, values, attempt, token)


def _write_start(runtime: Runtime, job_id: str, token: str, *, before: Sequence[tuple[Any, ...]] = ()
                 ) -> tuple[list[Any], int]:
    """Read what the job needs and mark it started, atomically (one script), so a cancel that committed first is
    seen here and one that comes later sees `started`."""
    return starts.start(runtime.connection, runtime.store.keys, job_id, fields=START_FIELDS, before=before,
                        values={"status": "started", "started_at": iso(), "worker": runtime.worker_name,
                                "pool": runtime.pool_name, "lease": token},
                        event={"worker": runtime.worker_name, "type": "started", "at": iso()})


def _start(runtime: Runtime, job_id: str) -> tuple[dict[str, Any], int, str]:
    """Mark the job started, taking the lease on its record (a new random token: an earlier attempt still
    running somewhere can write nothing more), and read what it needs: its record's START_FIELDS and its attempt
    number. Raises, running nothing and writing nothing to the record, when the job is not `queued`: it has no
    record, was cancelled first, or another attempt holds it (`store/starts.py`). A start the worker sent with its
    own (`start_with`) is taken as written."""
    config = runtime.config
    started, runtime.started = runtime.started, None
    if started is not None and started[0] == job_id:
        _, values, attempt, token = started
    else:
        token = secrets.token_hex(8)
        # Redis may go away between the dequeue and this write: wait for it rather than lose the dequeued job.
        values, attempt = until_written(lambda: _write_start(runtime, job_id, token), wait_s=config.redis_wait_s,
                                        what=f"job {job_id}: start")
    got = decode_fields(START_FIELDS, values)
    if "platform_id" not in got:
        log.warning("job %s has no record (expired or deleted); nothing run", job_id)
        raise JobFailedError(f"job {job_id} has no record (expired or deleted); nothing to run")
    if got.get("status") == "canceled":
        # Cancelled between being taken and starting: the start wrote nothing to the record; the skip is noted
        # among its events, and nothing runs.
        until_written(lambda: _skipped(runtime, job_id, "canceled"), wait_s=config.redis_wait_s,
                      what=f"job {job_id}: skipped")
        runtime.outcome = Outcome("canceled")
        raise JobFailedError(f"job {job_id} was canceled before it started; not run")
    if int(attempt) == starts.REFUSED:
        # Another attempt holds the job (started, parked, waiting or ended under it): this worker took it before
        # a freeze long enough for its pool to be declared dead, and the job was queued again and taken elsewhere.
        # This copy runs nothing and writes nothing; RQ's side belongs to the attempt that holds the job.
        runtime.outcome = Outcome("superseded")
        log.warning("job %s is %s under another attempt; this worker's copy was not run", job_id,
                    got.get("status"))
        raise JobFailedError(f"job {job_id} is held by another attempt ({got.get('status')}); this copy was not run")
    return got, int(attempt), token


def _context(runtime: Runtime, job_id: str, got: dict[str, Any], attempt: int, token: str) -> RunContext:
    """The run context of this attempt, cancelled already when a cancel was asked for before it started."""
    platform_id = got["platform_id"]
    logs.job_event(log, "started", job_id=job_id, platform_id=platform_id, attempt=attempt)
    state_key = got.get("state_key") or got.get("schedule_id")  # a schedule's runs hand state on by its id
    saved = None
    if state_key:
        saved = until_written(lambda: States(runtime.connection, runtime.store.keys).read(platform_id, state_key),
                              wait_s=runtime.config.redis_wait_s, what=f"job {job_id}: saved state")
    ctx = RunContext(
        job_id=job_id,
        platform_id=platform_id,
        attempt=attempt,
        store=runtime.store,
        interval_s=runtime.config.progress_interval_s,
        state=got.get("checkpoint"),
        redis_wait_s=runtime.config.redis_wait_s,
        links=runtime.links,
        parent_id=got.get("parent_id"),
        children=got.get("children") or (),
        dataset_max_rows=runtime.config.dataset_max_rows,
        dataset_max_bytes=runtime.config.dataset_max_bytes,
        lease=runtime.store.lease(job_id, token),
        state_key=state_key,
        saved_state=(saved or {}).get("state"),
    )
    if state_key and got.get("state_pending"):  # what a run before a wait saved, until this run saves its own
        ctx.state_to_save = got["state_pending"]
    if got.get("cancel_requested_at"):
        ctx.cancel()
    runtime.current = ctx
    if runtime.log_events is not None:
        runtime.log_events.lease = ctx.lease
    ctx.add_secrets(runtime.reach.secrets())  # an operator connection's secrets never reach the record either
    _throttle(runtime, ctx)
    # Database statements the job runs are bounded by its timeout and cancelled with it (server-side too);
    # `_release` ends that however the job ends.
    databases.job_started(timeout_s=got.get("timeout_s"), cancelled=lambda: ctx.should_stop)
    return ctx


def _throttle(runtime: Runtime, ctx: RunContext) -> None:
    """Bind the job to its rate limits: its HTTP requests and `ctx.throttle` take tokens of the shared buckets."""
    spec = runtime.registry.get(ctx.platform_id)
    ctx.rate_limit = spec.rate_limit if spec is not None else None
    if not runtime.throttled:
        return
    own = {rates.platform_bucket(ctx.platform_id): ctx.rate_limit} if ctx.rate_limit is not None else {}
    ctx.throttler = JobThrottle(runtime.buckets, own=own, max_wait_s=runtime.config.rate_max_wait_s,
                                interrupt=ctx.stop_if_cancelled, log=ctx.log, redis_wait_s=runtime.config.redis_wait_s)
    rates.install(ctx.throttler)


def _build(runtime: Runtime, ctx: RunContext, got: dict[str, Any], storages: list[Storage]) -> Any:
    """The platform, built from the record's settings with its secrets unsealed; its storage targets are bound
    to the context (rows stored count as progress, and are stored with the job's secrets masked) and added to
    `storages`, to be closed however the job ends."""
    secrets = _unseal(runtime, ctx, got)
    spec = runtime.registry.get(ctx.platform_id)
    if spec is None:
        raise CollectorError(f"platform {ctx.platform_id!r} is not installed on worker {runtime.worker_name!r}")
    kwargs = _schema(spec.settings).load(merge_secrets(got["settings"], secrets))
    for value in kwargs.values():
        if isinstance(value, Storage):
            value.bind(ctx.count_stored, ctx.masked_rows)
            storages.append(value)
    return spec.cls(**kwargs)


def _unseal(runtime: Runtime, ctx: RunContext, got: dict[str, Any]) -> dict[str, Any]:
    """The job's secrets, and the inputs resumes delivered (`ctx.inputs`), unsealed; both masked from now on in
    every log line of this process."""
    secrets: dict[str, Any] = {}
    if got.get("secrets"):
        if runtime.sealer is None:
            raise CollectorError("this job has sealed secrets but the worker has no COLLECTOR_SECRET_KEY")
        secrets = runtime.sealer.unseal(got["secrets"])
        ctx.add_secrets(secret_values(secrets))
    if got.get("inputs"):  # what resumes delivered: may be secret, so masked like secrets
        if runtime.sealer is None:
            raise CollectorError("this job has sealed inputs but the worker has no COLLECTOR_SECRET_KEY")
        ctx.inputs = runtime.sealer.unseal(got["inputs"])
        ctx.add_secrets(input_secrets(ctx.inputs))
    return secrets


def _wait(runtime: Runtime, ctx: RunContext, suspended: JobSuspended, got: dict[str, Any]) -> NoReturn:
    """The platform waits (for input or its children): record it and free the worker, or end it stopped when a
    cancel came while it ran."""
    signal.alarm(0)
    if ctx.lease_lost:
        _superseded(runtime, ctx)
    try:
        status = _suspend(runtime, ctx, suspended.wait)
    except Exception as exc:  # the wait could not be recorded: the job must not stay `started`
        _fail(runtime, ctx, exc, got)
    if status == "superseded":
        _superseded(runtime, ctx)
    if status != "stopped":
        _wake(runtime, ctx.job_id, got.get("concurrency"))
        raise JobFailedError(f"job {ctx.job_id} is {status}: {suspended}; its worker is free") from None
    ctx.cancel()
    _fail(runtime, ctx, JobCancelledError("cancelled"), got)


def _release(runtime: Runtime, ctx: RunContext, storages: list[Storage], *, ran: bool) -> None:
    """However the job ended: no current job, its database statements still running cancelled unless `_run`
    returned, its secrets no longer masked, its storage targets closed."""
    runtime.current = None
    rates.install(None)
    if runtime.log_events is not None:
        runtime.log_events.lease = None
    databases.job_ended(cancel=not ran)
    ctx.release_secrets()
    for target in storages:
        try:
            target.close()
        except Exception as exc:
            reason = mask_text(str(exc), ctx.secrets)
            log.warning("job %s: closing %s failed: %s", ctx.job_id, target.describe(), reason)


def _fail(runtime: Runtime, ctx: RunContext, exc: BaseException, got: dict[str, Any]) -> NoReturn:
    """Record how a job that raised ended (or when it is retried) and raise the masked error to RQ."""
    signal.alarm(0)  # the final write must not be cut short by the timeout alarm
    if ctx.lease_lost:
        _superseded(runtime, ctx)
    outcome, fields = _classify(exc, ctx, got, runtime)
    _end(runtime, ctx, outcome, fields, got)
    error = fields["error"]
    # One line per end, at the level an operator alerts on: failed is an error, a retry a warning, a stop asked
    # for is news. The traceback (masked, as recorded) only at DEBUG; the worker logs no other.
    level = {"failed": logging.ERROR, "scheduled": logging.WARNING}.get(outcome.status, logging.INFO)
    tags = {"job_id": ctx.job_id, "platform_id": ctx.platform_id, "event": outcome.status, "attempt": ctx.attempt}
    log.log(level, "job %s (%s) %s: %s: %s", ctx.job_id, ctx.platform_id, outcome.status, error["type"],
            error["message"], extra=tags)
    log.debug("job %s (%s) traceback:\n%s", ctx.job_id, ctx.platform_id, error["traceback"].rstrip(), extra=tags)
    if runtime.on_failure is not None:
        runtime.on_failure(exc)
    raise JobFailedError(f"{error['type']}: {error['message']}") from None


def _suspend(runtime: Runtime, ctx: RunContext, wait: dict[str, Any]) -> str:
    """A job that waits (for input or children): record it and free the worker. `stopped` when cancelled."""
    fields = ctx.final_fields()
    if ctx.state_key and ctx.state_to_save:  # saved before the wait: kept for the run that resumes, until it ends
        fields["state_pending"] = ctx.state_to_save
    status = "stopped" if ctx.should_stop else until_written(
        lambda: suspend(runtime.connection, runtime.store, ctx.job_id, wait, fields, lease=ctx.lease),
        wait_s=runtime.config.redis_wait_s, what=f"job {ctx.job_id}: waiting")
    if status == "superseded":
        return status
    if status != "stopped":
        runtime.outcome = Outcome(status)
        logs.job_event(log, status, job_id=ctx.job_id, platform_id=ctx.platform_id, attempt=ctx.attempt)
    else:
        _stop_children(runtime, ctx)
    return status


def _stop_children(runtime: Runtime, ctx: RunContext) -> None:
    """A job stopped on request: its children that have not ended stop too, those it queued after the cancel read
    its children included."""
    if ctx.children:
        with contextlib.suppress(redis.RedisError):  # the cancel itself stopped those it saw
            cancel_children(runtime.connection, runtime.config, ctx.children, by=f"parent job {ctx.job_id}")


_schemas: dict[type, Any] = {}


def _schema(settings: Any) -> Any:
    """A platform's settings schema, built once per process: building one costs 5x loading with it."""
    schema = _schemas.get(settings.schema_class)
    if schema is None:
        schema = _schemas[settings.schema_class] = settings.schema()
    return schema


def _classify(exc: BaseException, ctx: RunContext, got: dict[str, Any], runtime: Runtime
              ) -> tuple[Outcome, dict[str, Any]]:
    """What a raised exception means for the job: stopped, timed out, retried later, or failed."""
    message = mask_text(f"{exc}", ctx.secrets)
    error = {
        "type": type(exc).__name__,
        "message": message,
        "traceback": mask_text("".join(traceback.format_exception(exc)), ctx.secrets),
    }
    if ctx.should_stop or isinstance(exc, JobCancelledError):
        return _stopped(runtime, ctx, got, error)
    if timed_out(exc):
        error.update(type="JobTimeoutError", message=timeout_message(got.get("timeout_s")))
        return Outcome("failed"), {"error": error}
    if isinstance(exc, TransientError):
        delay = retry_delay({**got, "attempt": ctx.attempt}, runtime.config)
        if delay is not None and _cancel_asked(runtime, ctx.job_id):
            return _stopped(runtime, ctx, got, error)  # the cancel came while it ran, before it reached the run
        if delay is not None:
            return Outcome("scheduled", delay), {"error": error}
    return Outcome("failed"), {"error": error}


def _stopped(runtime: Runtime, ctx: RunContext, got: dict[str, Any], error: dict[str, Any]
             ) -> tuple[Outcome, dict[str, Any]]:
    """The job ends `stopped`, a cancel's end: who asked for it is on the record (the cancel may have come while
    it ran)."""
    by = got.get("canceled_by")
    with contextlib.suppress(redis.RedisError):
        by = runtime.store.read(ctx.job_id, "canceled_by").get("canceled_by", by)
    error.update(type="JobCancelledError", message=f"stopped on request of {by or 'a client'}")
    return Outcome("stopped"), {"error": error}


def _cancel_asked(runtime: Runtime, job_id: str) -> bool:
    """Whether a cancel was asked for the running job (it may not have reached the run yet). Redis away: False,
    and the retry's start, which reads it with the start, stops it then."""
    try:
        return bool(runtime.store.read(job_id, "cancel_requested_at").get("cancel_requested_at"))
    except redis.RedisError:
        return False


def _superseded(runtime: Runtime, ctx: RunContext) -> NoReturn:
    """This attempt lost its lease: it stops writing anything (record, events, RQ's side); another attempt owns the
    job, or its record is gone. Logged once, by the context."""
    runtime.outcome = Outcome("superseded")
    with contextlib.suppress(LeaseLostError):
        ctx.check_lease()
    raise JobFailedError(f"job {ctx.job_id}: attempt {ctx.attempt} lost its lease; nothing more written") from None


def _wake(runtime: Runtime, job_id: str, cap: str | None) -> None:
    """The slot this job held is free: the oldest parked job of its cap takes it now (maintenance is the backstop)."""
    if cap:
        try:
            runtime.caps.wake(cap)
        except redis.RedisError as exc:
            log.warning("job %s: parked jobs of %s not woken yet (%s)", job_id, cap, exc)


def _skipped(runtime: Runtime, job_id: str, status: str) -> None:
    with runtime.connection.pipeline(transaction=True) as pipe:
        runtime.store.event(job_id, "skipped", pipe, reason=f"{status} before it started")
        pipe.execute()


def _end(runtime: Runtime, ctx: RunContext, outcome: Outcome, fields: dict[str, Any], got: dict[str, Any]) -> None:
    """Write a job's end (or retry) state, datasets, event, notifications and expiry in one round trip (`got`: the
    record as read at the start); waits out a Redis outage."""
    status = outcome.status
    runtime.outcome = outcome
    duration_s = time.monotonic() - ctx._started  # the run's, not the time a full or absent Redis made it wait

    def write(pipe: Any) -> None:
        Ends(runtime.store, runtime.rq).attempt_ended(
            pipe, ctx.job_id, platform_id=ctx.platform_id, attempt=ctx.attempt, status=status,
            fields={**ctx.final_fields(), **fields}, datasets=ctx.datasets,
            duration_s=duration_s, delay_s=outcome.delay_s,
            known={name: got.get(name) for name in NAMED}, cap=got.get("concurrency"))
        # A bookmark moves only when a run finished (and not in a local try-out).
        if status == "finished" and ctx.state_key and ctx.state_to_save and runtime.saves_state:
            States(runtime.connection, runtime.store.keys).save(
                pipe, platform_id=ctx.platform_id, state_key=ctx.state_key, payload=ctx.state_to_save,
                job_id=ctx.job_id, ttl_s=runtime.config.state_ttl_s, found=ctx.state_found)
        if ctx.throttler is not None and ctx.throttler.waited_s > 0:
            metrics.rate_waited(pipe, runtime.store.keys, platform_id=ctx.platform_id, seconds=ctx.throttler.waited_s)
        if ctx.lease is not None:
            ctx.lease.end(pipe)

    def ended() -> None:
        metrics.ended(job_id=ctx.job_id, platform_id=ctx.platform_id, status=status, duration_s=duration_s)

    lease = ctx.lease
    if (status == "finished" and runtime.ends_with_worker and lease is not None and lease.lost is None
            and not ctx.parent_id and not got.get("concurrency")):
        # Nothing follows the write but the log line: the worker sends it with its own end (one round trip).
        runtime.pending_end = PendingEnd(lease, lease.fenced(write), ended)
        return
    try:  # fenced: written only while this attempt holds its lease, and never onto a record that is gone
        until_written(lambda: ctx.write(write), wait_s=runtime.config.redis_wait_s,
                      what=f"job {ctx.job_id}: final state")
    except LeaseLostError:
        _superseded(runtime, ctx)
    _wake(runtime, ctx.job_id, got.get("concurrency"))
    if status == "stopped":
        _stop_children(runtime, ctx)
    if status != "scheduled":
        ended()
    if ctx.parent_id and status in ENDED:
        try:  # the parent may wait for this, its last child; the maintenance sweep is the backstop
            resume_parent(runtime.connection, runtime.config, ctx.parent_id)
        except redis.RedisError as exc:
            log.warning("job %s: parent %s not resumed yet (%s)", ctx.job_id, ctx.parent_id, exc)


def write_pending_end(runtime: Runtime) -> bool:
    """Send the end the runner left to the worker (`PendingEnd`) on its own, waiting out a Redis outage: True when
    written (or when there was none), False when the attempt lost its lease (nothing written)."""
    pending, runtime.pending_end = runtime.pending_end, None
    if pending is None:
        return True
    written = until_written(lambda: pending.lease.send(pending.fenced), wait_s=runtime.config.redis_wait_s,
                            what=f"job {pending.job_id}: final state")
    return pending_end_answered(runtime, pending, written)


def pending_end_answered(runtime: Runtime, pending: PendingEnd, written: bool) -> bool:
    """After a pending end was sent: its log line when written; when its lease was lost, the job is this
    attempt's no more (`superseded`), which is logged once."""
    if written:
        pending.ended()
        return True
    runtime.outcome = Outcome("superseded")
    log.warning("job %s: this attempt lost its lease (%s) before its end was written; nothing was written",
                pending.job_id, pending.lease.lost)
    return False
