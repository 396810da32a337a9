"""What a worker runs for one job: load the record, build the platform, call `_run`, write the outcome."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import redis
from rq import get_current_job
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from collector import databases, egress, logs, metrics, reach
from collector.config import Config
from collector.context import JobSuspended, RunContext, until_written
from collector.errors import CollectorError, JobCancelledError, TransientError
from collector.jobs import merge_secrets, secret_values
from collector.masking import mask_text, mask_value
from collector.policy import RetryPolicy
from collector.registry import Registry
from collector.sealing import Sealer
from collector.state import DATASETS, ENDED, JobStore, connect, decode_fields, utcnow
from collector.waiting import input_secrets
from storage.base import Storage

log = logging.getLogger(__name__)


class JobFailedError(CollectorError):
    """Raised to RQ when a job failed; its text is already masked (RQ stores it)."""

    code = "job_failed"


@dataclasses.dataclass
class Outcome:
    """How the last job a worker ran ended, for the worker's RQ bookkeeping."""

    # finished, failed, stopped, canceled, scheduled (a retry after `delay_s`), waiting (for input or children:
    # the worker is free), or queued (its children ended while it suspended: queued again at once)
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
    # Told the original, unmasked exception of a failed job. Only the local runner sets it (`collector run
    # --pdb` debugs that exception); workers leave it unset, so what leaves them stays masked.
    on_failure: Callable[[BaseException], None] | None = None

    def __post_init__(self) -> None:
        # The connections and data root the platforms resolve against: the pool loaded them at start-up.
        self.reach = reach.ensure(self.config)
        egress.install(egress.EgressPolicy.from_config(self.config))  # what this process's jobs may reach
        self.store = JobStore(self.connection, self.config)
        self.sealer = Sealer(self.config.secret_key) if self.config.secret_key else None
        self.scheduled_key = ScheduledJobRegistry(
            self.config.queue_name, connection=self.connection, serializer=JSONSerializer
        ).key
        self.outcome: Outcome | None = None
        self.current: RunContext | None = None  # the context of the job running now, for cancel signals
        from collector.waiting import JobLinks

        self.links = JobLinks(connection=self.connection, config=self.config, registry=self.registry)


_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Make `runtime` the one `run_job` uses in this process."""
    global _runtime
    _runtime = runtime
    logs.keep_platform_logs(runtime.connection, runtime.store.keys)  # ctx.log lines onto the job's events


def current_runtime() -> Runtime:
    """This process's runtime; built from the environment on first use when no pool installed one."""
    global _runtime
    if _runtime is None:
        config = Config.from_env()
        if not config.redis_url:
            raise CollectorError("COLLECTOR_REDIS_URL is not set; the worker does not know which Redis to use")
        connection = connect(config.redis_url, blocking=True)
        _runtime = Runtime(config, connection, Registry.discover(config.platforms_package))
    return _runtime


def run_job() -> Any:
    """The function RQ calls. It takes no arguments, so nothing about the job shows in RQ's call string."""
    job = get_current_job()
    if job is None:
        raise CollectorError("run_job must be called by an RQ worker")
    return execute(job.id, current_runtime())


START_FIELDS = ("platform_id", "settings", "secrets", "status", "checkpoint", "retry", "max_attempts",
                "cancel_requested_at", "canceled_by", "timeout_s", "inputs", "parent_id", "children", "resumes")


def execute(job_id: str, runtime: Runtime) -> Any:
    """Run one job to its end and record the outcome; re-raises a masked error when it did not finish."""
    store, config = runtime.store, runtime.config
    key = store.keys.job(job_id)
    runtime.outcome = Outcome("failed")
    # One round trip: read what the job needs and mark it started, atomically (MULTI), so a cancel
    # that committed first is seen here and one that comes later sees `started`.
    def start() -> list[Any]:
        with runtime.connection.pipeline(transaction=True) as pipe:
            pipe.hmget(key, list(START_FIELDS))
            pipe.hset(key, mapping={"status": "started", "started_at": utcnow(), "worker": runtime.worker_name,
                                    "pool": runtime.pool_name})
            pipe.hincrby(key, "attempt", 1)
            store.event(job_id, "started", pipe, worker=runtime.worker_name)
            metrics.job_started(pipe, store.keys, job_id=job_id)
            return pipe.execute()

    # Redis may go away between the dequeue and this write: wait for it rather than lose the dequeued job.
    values, _, attempt, *_ = until_written(start, wait_s=config.redis_wait_s, what=f"job {job_id}: start")
    got = decode_fields(START_FIELDS, values)
    if "platform_id" not in got:
        runtime.connection.delete(key, store.keys.events(job_id))  # do not leave the stub the HSET made
        raise JobFailedError(f"job {job_id} has no record (expired or deleted); nothing to run")
    if got.get("status") in ENDED:
        # Cancelled (or ended) between being dequeued and starting: put the status back, run nothing.
        until_written(lambda: _restore(runtime, job_id, got["status"]), wait_s=config.redis_wait_s,
                      what=f"job {job_id}: status")
        runtime.outcome = Outcome("canceled")
        raise JobFailedError(f"job {job_id} was {got['status']} before it started; not run")
    platform_id = got["platform_id"]
    attempt = int(attempt)
    logs.job_event(log, "started", job_id=job_id, platform_id=platform_id, attempt=attempt)
    ctx = RunContext(
        job_id=job_id,
        platform_id=platform_id,
        attempt=attempt,
        store=store,
        interval_s=config.progress_interval_s,
        state=got.get("checkpoint"),
        redis_wait_s=config.redis_wait_s,
        links=runtime.links,
        parent_id=got.get("parent_id"),
        children=got.get("children") or (),
        dataset_max_rows=config.dataset_max_rows,
        dataset_max_bytes=config.dataset_max_bytes,
    )
    if got.get("cancel_requested_at"):
        ctx.cancel()
    runtime.current = ctx
    storages: list[Storage] = []
    ctx.add_secrets(runtime.reach.secrets())  # an operator connection's secrets never reach the record either
    # Database statements the job runs are bounded by its timeout and cancelled with it (server-side too).
    databases.job_started(timeout_s=got.get("timeout_s"), cancelled=lambda: ctx.cancelled)
    ran = False
    try:
        sealed = got.get("secrets")
        secrets: dict[str, Any] = {}
        if sealed:
            if runtime.sealer is None:
                raise CollectorError("this job has sealed secrets but the worker has no COLLECTOR_SECRET_KEY")
            secrets = runtime.sealer.unseal(sealed)
            ctx.add_secrets(secret_values(secrets))
        if got.get("inputs"):  # what resumes delivered: may be secret, so masked like secrets
            if runtime.sealer is None:
                raise CollectorError("this job has sealed inputs but the worker has no COLLECTOR_SECRET_KEY")
            ctx.inputs = runtime.sealer.unseal(got["inputs"])
            ctx.add_secrets(input_secrets(ctx.inputs))
        spec = runtime.registry.get(platform_id)
        if spec is None:
            raise CollectorError(f"platform {platform_id!r} is not installed on worker {runtime.worker_name!r}")
        settings = merge_secrets(got["settings"], secrets)
        kwargs = _schema(spec.settings).load(settings)
        for value in kwargs.values():
            if isinstance(value, Storage):
                value.bind(ctx.count_stored)
                storages.append(value)
        result = mask_value(spec.cls(**kwargs)._run(ctx), ctx.secrets)  # RQ stores the result too
        ran = True
    except JobSuspended as suspended:
        signal.alarm(0)
        try:
            status = _suspend(runtime, ctx, suspended.wait)
        except Exception as exc:  # the wait could not be recorded: the job must not stay `started`
            _fail(runtime, ctx, exc, got)
        if status != "stopped":
            raise JobFailedError(f"job {job_id} is {status}: {suspended}; its worker is free") from None
        ctx.cancel()  # a cancel came while it ran: it ends stopped, below
        _fail(runtime, ctx, JobCancelledError("cancelled"), got)
    except BaseException as exc:
        _fail(runtime, ctx, exc, got)
    finally:
        runtime.current = None
        databases.job_ended(cancel=not ran)
        ctx.release_secrets()
        for target in storages:
            try:
                target.close()
            except Exception as exc:
                reason = mask_text(str(exc), ctx.secrets)
                log.warning("job %s: closing %s failed: %s", job_id, target.describe(), reason)
    signal.alarm(0)
    if ctx.cancelled:  # the platform noticed `ctx.cancelled` and returned early
        _end(runtime, ctx, Outcome("stopped"), {"result": result})
        raise JobFailedError(f"job {job_id} stopped on request")
    _end(runtime, ctx, Outcome("finished"), {"result": result})
    return result


def _fail(runtime: Runtime, ctx: RunContext, exc: BaseException, got: dict[str, Any]) -> None:
    """Record how a job that raised ended (or when it is retried) and raise the masked error to RQ."""
    signal.alarm(0)  # the final write must not be cut short by the timeout alarm
    outcome, fields = _classify(exc, ctx, got, runtime)
    _end(runtime, ctx, outcome, fields)
    error = fields["error"]
    log.info("job %s (%s) %s: %s: %s", ctx.job_id, ctx.platform_id, outcome.status, error["type"], error["message"])
    if runtime.on_failure is not None:
        runtime.on_failure(exc)
    raise JobFailedError(f"{error['type']}: {error['message']}") from None


def _suspend(runtime: Runtime, ctx: RunContext, wait: dict[str, Any]) -> str:
    """A job that waits (for input or children): record it and free the worker. `stopped` when cancelled."""
    from collector.waiting import suspend

    status = "stopped" if ctx.cancelled else until_written(
        lambda: suspend(runtime.connection, runtime.store, ctx.job_id, wait, ctx.final_fields()),
        wait_s=runtime.config.redis_wait_s, what=f"job {ctx.job_id}: waiting")
    if status != "stopped":
        runtime.outcome = Outcome(status)
        logs.job_event(log, status, job_id=ctx.job_id, platform_id=ctx.platform_id, attempt=ctx.attempt)
    elif ctx.children:  # cancelled while it spawned: children queued after the cancel went out stop too
        from collector.waiting import cancel_children

        with contextlib.suppress(redis.RedisError):
            cancel_children(runtime.connection, runtime.config, ctx.children, by=f"parent job {ctx.job_id}")
    return status


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
    if ctx.cancelled or isinstance(exc, JobCancelledError):
        by = got.get("canceled_by")
        with contextlib.suppress(redis.RedisError):  # the cancel came while it ran: who sent it is on the record
            by = runtime.store.read(ctx.job_id, "canceled_by").get("canceled_by", by)
        error.update(type="JobCancelledError", message=f"stopped on request of {by or 'a client'}")
        return Outcome("stopped"), {"error": error}
    if _timed_out(exc):
        error.update(type="JobTimeoutError", message=timeout_message(got.get("timeout_s")))
        return Outcome("failed"), {"error": error}
    policy = RetryPolicy.from_record(got.get("retry"), runtime.config)
    max_attempts = int(got.get("max_attempts") or policy.max_attempts)
    tries = ctx.attempt - int(got.get("resumes") or 0)  # attempts after a wait are no retries
    if isinstance(exc, TransientError) and tries < max_attempts:
        delay = policy.delay(ctx.attempt)
        return Outcome("scheduled", delay), {"error": error, "retry_at": at_offset(delay)}
    return Outcome("failed"), {"error": error}


def _timed_out(exc: BaseException) -> bool:
    """Whether the timeout alarm ended the job: raised here, or raised inside a driver that then failed on its
    way out (a database connection closed mid-statement) and was turned into the platform's own error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, JobTimeoutException):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def timeout_message(timeout_s: Any) -> str:
    return (f"the job ran longer than its timeout of {timeout_s} s and was stopped; give the spec a larger "
            "timeout_s (or the platform a larger TIMEOUT_S) if it needs longer")


def _restore(runtime: Runtime, job_id: str, status: str) -> None:
    with runtime.connection.pipeline(transaction=True) as pipe:
        runtime.store.update(job_id, {"status": status}, pipe)
        pipe.hincrby(runtime.store.keys.job(job_id), "attempt", -1)  # it did not run: no attempt was made
        runtime.store.event(job_id, "skipped", pipe, reason=f"{status} before it started")
        pipe.execute()


def _end(runtime: Runtime, ctx: RunContext, outcome: Outcome, fields: dict[str, Any]) -> None:
    """Write a job's end (or retry) state, datasets, event and expiry in one round trip; waits out a Redis outage."""
    store, status = runtime.store, outcome.status
    runtime.outcome = outcome
    duration_s = time.monotonic() - ctx._started  # the run's, not the time a full or absent Redis made it wait

    def write() -> None:
        with runtime.connection.pipeline(transaction=True) as pipe:
            record = {"status": status, **ctx.final_fields(), **fields}
            event: dict[str, Any] = {"attempt": ctx.attempt}
            if "error" in fields:
                event["error"] = {k: fields["error"][k] for k in ("type", "message")}
            if status == "scheduled":
                pipe.zadd(runtime.scheduled_key, {ctx.job_id: time.time() + outcome.delay_s})
                # RQ's status changes here too: a mover that requeues the job at once must not be overwritten.
                pipe.hset(Job.key_for(ctx.job_id), "status", JobStatus.SCHEDULED.value)
                event.update(delay_s=outcome.delay_s, retry_at=fields["retry_at"])
                store.update(ctx.job_id, record, pipe)
                store.event(ctx.job_id, "retry_scheduled", pipe, **event)
                metrics.count(pipe, store.keys, "retried", ctx.platform_id)
            else:
                ttl = store.ttl_for(status)
                summary = store.save_datasets(ctx.job_id, ctx.datasets, pipe, ttl_s=ttl)  # SET ... EX per chunk
                record["ended_at"] = utcnow()
                if summary:
                    record["datasets"] = summary
                store.update(ctx.job_id, record, pipe)
                store.event(ctx.job_id, status, pipe, **event)
                store.expire(ctx.job_id, ttl, pipe, [name for name in DATASETS if name not in ctx.datasets])
                metrics.job_ended(pipe, store.keys, job_id=ctx.job_id, platform_id=ctx.platform_id, status=status,
                                  duration_s=duration_s)
            pipe.srem(store.keys.cancels(), ctx.job_id)
            pipe.execute()

    until_written(write, wait_s=runtime.config.redis_wait_s, what=f"job {ctx.job_id}: final state")
    if status != "scheduled":
        metrics.ended(job_id=ctx.job_id, platform_id=ctx.platform_id, status=status, duration_s=duration_s)
    if ctx.parent_id and status in ENDED:
        from collector.waiting import resume_parent

        try:  # the parent may wait for this, its last child; the maintenance sweep is the backstop
            resume_parent(runtime.connection, runtime.config, ctx.parent_id)
        except redis.RedisError as exc:
            log.warning("job %s: parent %s not resumed yet (%s)", ctx.job_id, ctx.parent_id, exc)


def at_offset(seconds: float) -> str:
    """The ISO 8601 UTC time `seconds` from now."""
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
