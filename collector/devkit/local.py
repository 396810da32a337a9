"""Running a job in this process, exactly as a worker runs it, to develop a platform or replay a failed job."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fakeredis
import redis

from collector.config import Config
from collector.errors import ConfigError, JobFailedError, ValidationError
from collector.run.runner import Runtime, execute
from collector.sealing import new_key
from collector.specs.job import JobSpec, validate_spec
from collector.specs.registry import Registry
from collector.store.connection import connect_to
from collector.store.records import DATASETS, JobStore
from collector.submit.submitter import new_record
from collector.workflows.claims import beat, claim, settle

ProgressObserver = Callable[[dict[str, Any]], None]
CANCEL_POLL_S = 0.5  # how often a claimed job's run looks for a cancel asked for it


class ObservedStore(JobStore):
    """A job store that also hands each progress state the run context writes to an observer (the bar)."""

    def __init__(self, connection: redis.Redis, config: Config, observer: ProgressObserver | None) -> None:
        super().__init__(connection, config)
        self.observer = observer

    def update(self, job_id: str, fields: Mapping[str, Any], pipeline: Any = None) -> None:
        super().update(job_id, fields, pipeline)
        if self.observer is not None and isinstance(fields.get("progress"), dict):
            self.observer(fields["progress"])


@dataclasses.dataclass
class LocalOutcome:
    """How a local run ended: the record's view, plus the original exception for the debugger."""

    job_id: str
    status: str
    result: Any
    error: dict[str, Any] | None
    datasets: dict[str, list[Any]]
    record: dict[str, Any]
    kept: dict[str, Any] = dataclasses.field(default_factory=dict)  # each dataset's summary: rows, bytes, what was cut
    exception: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.status == "finished"


def local_runtime(
    config: Config, *, connection: redis.Redis | None = None, registry: Registry | None = None
) -> Runtime:
    """A runtime like a worker's. With no `COLLECTOR_REDIS_URL` an in-process fake Redis stands in, and with
    no `COLLECTOR_SECRET_KEY` a key for this process only seals the secrets."""
    if connection is None:
        connection = connect_to(config) if config.redis_configured else fakeredis.FakeRedis()
    if not config.secret_key:
        config = dataclasses.replace(config, secret_key=new_key())
    registry = registry or Registry.discover(config.platforms_package)
    return Runtime(config, connection, registry, worker_name=f"local:{socket.gethostname()}.{os.getpid()}")


def check_spec(body: Any, registry: Registry) -> JobSpec:
    """`validate_spec`, but a platform whose file failed to load is named with the reason, not as unknown."""
    platform_id = body.get("platform_id") if isinstance(body, dict) else None
    if isinstance(platform_id, str) and platform_id in registry.broken:
        raise ValidationError(
            f"platforms/{platform_id}.py failed to load: {registry.broken[platform_id]}; fix the file and run again",
            details={"platform_id": [registry.broken[platform_id]]},
        )
    return validate_spec(body, registry)


def write_record(runtime: Runtime, spec: JobSpec) -> str:
    """The job record a submission would write (secrets sealed), without queueing it: this process runs it."""
    job_id = f"local-{uuid.uuid4().hex}"
    fields = new_record(spec, runtime.sealer,
                        no_key="this runtime has no key to seal the spec's secrets; build it with local_runtime()")
    fields["max_attempts"] = 1  # one attempt: a local run reports a failure at once instead of scheduling retries
    with runtime.connection.pipeline(transaction=True) as pipe:
        runtime.store.create(job_id, fields, pipe)
        pipe.execute()
    return job_id


def run_local(body: Any, runtime: Runtime, *, on_progress: ProgressObserver | None = None) -> LocalOutcome:
    """Validate `body` as the API does, then run it through the worker's `execute` in this process.

    Raises `ValidationError` for a bad spec; a failing job is an outcome, not an exception.
    """
    spec = check_spec(body, runtime.registry)
    runtime.store = ObservedStore(runtime.connection, runtime.config, on_progress)
    runtime.saves_state = False  # a try-out reads a state key's bookmark, never moves it
    return _execute(write_record(runtime, spec), runtime)


def run_claimed(job_id: str, runtime: Runtime, *, on_progress: ProgressObserver | None = None,
                key_given: bool = True) -> LocalOutcome:
    """Claim the queued job `job_id` of the service whose Redis `runtime` uses, and run it in this process as that
    job: its record, its attempt count, its retry policy, its events (a retry it earns is left to the pool).
    `ConflictError` with the reason when it is not queued; `ConfigError` when its secrets need a key this process
    lacks (`key_given` False: `local_runtime` made one up, which opens nothing of the service's; nothing claimed)."""
    if not runtime.config.redis_configured:
        raise ConfigError(
            f"claiming job {job_id} runs it as that job, so this process writes its record: set "
            "COLLECTOR_REDIS_URL (and COLLECTOR_SECRET_KEY) as the workers have them, or give --copy to run a copy "
            "of its spec here instead"
        )
    sealed = runtime.store.read(job_id, "secrets", "inputs")
    if sealed and not key_given:
        raise ConfigError(
            f"job {job_id} has sealed secrets or inputs: set COLLECTOR_SECRET_KEY to the key the workers use to "
            "claim it (nothing was claimed)"
        )
    claim(runtime.connection, runtime.config, job_id, by=runtime.worker_name)
    runtime.store = ObservedStore(runtime.connection, runtime.config, on_progress)
    done = threading.Event()
    relay = threading.Thread(target=_relay_cancels, args=(runtime, job_id, done), daemon=True)
    relay.start()
    try:
        return _execute(job_id, runtime)
    finally:
        done.set()
        relay.join()
        settle(runtime.connection, runtime.config, job_id)


def _relay_cancels(runtime: Runtime, job_id: str, done: threading.Event) -> None:
    """What a pool's supervisor does for its children: a cancel asked for the claimed job (`POST
    /execution/cancel`) reaches its run context, so `ctx.cancelled` turns true and `ctx.progress` raises; and the
    claim's beat is renewed, so the sweep knows this process still runs the job."""
    key = runtime.store.keys.cancels()
    while not done.wait(CANCEL_POLL_S):
        try:
            beat(runtime.connection, runtime.config, job_id, by=runtime.worker_name)
            asked = runtime.connection.sismember(key, job_id)
        except redis.RedisError:
            continue  # Redis is away: the job's own writes wait for it; look again later
        current = runtime.current
        if asked and current is not None and current.job_id == job_id:
            current.cancel()


def _execute(job_id: str, runtime: Runtime) -> LocalOutcome:
    failures: list[BaseException] = []
    previous_hook, runtime.on_failure = runtime.on_failure, failures.append
    try:
        execute(job_id, runtime)
    except JobFailedError:
        pass  # the record says how it failed; `failures` holds the original exception
    finally:
        runtime.on_failure = previous_hook
    record = runtime.store.view(job_id) or {}
    kept = record.get("datasets") or {}
    datasets = runtime.store.read_datasets(job_id)
    return LocalOutcome(
        job_id=job_id,
        status=record.get("status", "failed"),
        result=record.get("result"),
        error=record.get("error"),
        datasets=datasets,
        record={**record, "datasets": datasets},
        kept=kept,
        exception=failures[0] if failures else None,
    )


def write_datasets(datasets: Mapping[str, list[Any]], out_dir: Path) -> dict[str, Path]:
    """Each dataset as `DIR/<name>.jsonl`, one row per line; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in DATASETS:
        if name not in datasets:
            continue
        path = out_dir / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in datasets[name]:
                handle.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
        written[name] = path
    return written
