"""The run context a platform's `_run` receives: progress, datasets, checkpoints, cancellation and a logger."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from collector import defaults
from collector.errors import ChildJobError, JobCancelledError, JobSuspended, LeaseLostError
from collector.masking import forget, mask_json, mask_text, masked_rows, remember
from collector.rates import Rate, parse_rate, platform_bucket
from collector.store.datasets import KeptDataset, cut_note, keep_rows, masked
from collector.store.records import DATASETS, ENDED, JOB_ID, JobStore, Lease
from collector.store.state import encode_state

if TYPE_CHECKING:
    from collector.run.throttle import JobThrottle
    from collector.workflows.children import JobLinks

T = TypeVar("T")

log = logging.getLogger(__name__)

WAIT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
BUCKET_KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
# The service's own event types: a platform's `ctx.event` may not take their names (it would pass for the service).
SERVICE_EVENTS = frozenset({
    "queued", "started", "checkpoint", "retry_scheduled", "requeued", "worker_lost", "cancel_requested", "canceled",
    "skipped", "waiting", "resumed", "finished", "failed", "stopped", "log", "retried", "claimed",
})
# Redis errors a job's writes wait out: an outage, and a Redis at its maxmemory that refuses writes (OOM).
REDIS_WAITS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError)
_KEEP = object()


class MaskingLogger(logging.LoggerAdapter):
    """A logger that tags lines with the job and masks the job's secret values in every message."""

    def __init__(self, logger: logging.Logger, *, job_id: str, platform_id: str, secrets: Iterable[str],
                 guard: Callable[[], None] | None = None) -> None:
        super().__init__(logger, {"job_id": job_id, "platform_id": platform_id})
        self.secrets = [s for s in secrets if s]
        self._guard = guard  # raises once the run lost its lease: a stale run logs nothing more

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self._guard is not None:
            self._guard()
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        kwargs.setdefault("extra", {}).update(self.extra or {})
        self.logger.log(level, "[%s %s] %s", self.extra["platform_id"], self.extra["job_id"],  # type: ignore[index]
                        mask_text(text, self.secrets), **kwargs)


class RunContext:
    """Handed to `_run(ctx)`. `progress` is cheap in a tight loop: Redis writes are coalesced."""

    def __init__(
        self,
        *,
        job_id: str,
        platform_id: str,
        attempt: int,
        store: JobStore,
        interval_s: float,
        secrets: Iterable[str] = (),
        logger: logging.Logger | None = None,
        state: Any = None,
        redis_wait_s: float = defaults.REDIS_WAIT_S,
        inputs: Mapping[str, Any] | None = None,
        links: JobLinks | None = None,
        parent_id: str | None = None,
        children: Iterable[str] = (),
        dataset_max_rows: int = defaults.DATASET_MAX_ROWS,
        dataset_max_bytes: int = defaults.DATASET_MAX_BYTES,
        lease: Lease | None = None,
        state_key: str | None = None,
        saved_state: Mapping[str, Any] | None = None,
    ) -> None:
        self.job_id = job_id
        # Incremental state: what the last finished run of this state key saved ({} at first), and what this run
        # saves for the next (JSON, written with the job's end only when it finishes).
        self.state_key = state_key
        self.state_found = saved_state is not None
        self.saved_state: dict[str, Any] = dict(saved_state or {})
        self.state_to_save: str | None = None
        # The attempt's hold on its record: every write goes through it (none without one: a local test context).
        self.lease = lease
        self._lost_told = False
        self.state = state  # the last checkpoint of an earlier attempt, None on a first run
        self.platform_id = platform_id
        self.attempt = attempt
        self.secrets = [s for s in secrets if s]
        self._remembered: list[str] = []  # what `add_secrets` had every log line of this process mask
        self.log = MaskingLogger(
            logger or logging.getLogger(f"platforms.{platform_id}"),
            job_id=job_id,
            platform_id=platform_id,
            secrets=self.secrets,
            guard=self.check_lease,
        )
        self.stored_rows = 0
        self._store = store
        self._interval = interval_s
        self._done: float = 0
        self._total: float | None = None
        self._message: str | None = None
        self._started = time.monotonic()
        self._next_write = self._started + interval_s
        self._datasets: dict[str, KeptDataset] = {}
        self._dataset_caps = {"max_rows": dataset_max_rows, "max_bytes": dataset_max_bytes}
        self._cancelled = False
        self._redis_wait_s = redis_wait_s
        self.inputs: dict[str, Any] = dict(inputs or {})  # what resumes delivered, by the name waited for
        self.parent_id = parent_id
        self.children: list[str] = list(children)  # ids of the sub-jobs spawned so far, in spawn order
        self._links = links
        self._spawned = 0
        self._events = 0  # `ctx.event` calls so far: the first PLATFORM_EVENTS_PER_JOB are kept
        self.rate_limit: Rate | None = None  # the platform's RATE_LIMIT
        self.throttler: JobThrottle | None = None  # the worker's: takes tokens from Redis (none: never waits)

    @property
    def cancelled(self) -> bool:
        """True once someone cancelled the job: stop soon (`progress` raises `JobCancelledError` from then on).
        Raises `LeaseLostError` once this run lost its lease (the job runs elsewhere)."""
        self.check_lease()
        return self._cancelled

    @property
    def should_stop(self) -> bool:
        """Cancelled, or no longer holding the lease: what the runner and database guards ask (never raises)."""
        return self._cancelled or self.lease_lost

    @property
    def lease_lost(self) -> bool:
        return self.lease is not None and self.lease.lost is not None

    def check_lease(self) -> None:
        """Raise `LeaseLostError` (logging why, once) when this run lost its lease: it must stop, writing nothing."""
        if not self.lease_lost:
            return
        assert self.lease is not None
        why = ("its record was deleted or expired" if self.lease.lost == "gone" else
               "the job was recovered and runs as another attempt, or ended, while this run was out of touch")
        message = f"job {self.job_id}: attempt {self.attempt} lost its lease ({why}); stopping it, writing nothing more"
        if not self._lost_told:
            self._lost_told = True
            log.warning("%s", message)
        raise LeaseLostError(message)

    def write(self, build: Callable[[Any], Any]) -> None:
        """Queue a write of this run on the pipeline `build` gets and send it, fenced by the lease (one round trip,
        atomic). Raises `LeaseLostError` when the lease is lost; without a lease, a plain transaction."""
        if self.lease is None:
            with self._store.connection.pipeline(transaction=True) as pipe:
                build(pipe)
                pipe.execute()
            return
        self.check_lease()
        if not self.lease.write(build):
            self.check_lease()

    def stop_if_cancelled(self) -> None:
        """Raise `LeaseLostError` once the lease is lost, `JobCancelledError` once the job is cancelled."""
        self.check_lease()
        if self._cancelled:
            raise JobCancelledError(f"job {self.job_id} was cancelled; stopping")

    def throttle(self, key: str | None = None, *, rate: str | None = None) -> float:
        """Wait for a token of the platform's rate limit, shared by every pool; the seconds waited.

        Without `key`: the platform's bucket, the one `collector.http_client` takes from for each request. With
        `key` (1-64 letters, digits, `_.:@-`, e.g. an account id): that key's own bucket of the platform. `rate`
        (`"10/s"`, `"600/min"`, `"5000/h"`) stands in for the platform's `RATE_LIMIT`. Raises `ValueError` on a bad
        key or rate, `JobCancelledError`/`LeaseLostError` when the job must stop while waiting, and `RateWaitError`
        (retried later) when the next token is further off than `COLLECTOR_RATE_MAX_WAIT_S`. Outside a worker
        (the test kit) it never waits."""
        self.check_lease()
        if key is not None and (not isinstance(key, str) or not BUCKET_KEY.match(key)):
            raise ValueError(f"ctx.throttle key {key!r} must be 1-64 letters, digits, '_', '.', ':', '@' or '-'")
        try:
            limit = self.rate_limit if rate is None else parse_rate(rate)
        except ValueError as exc:
            raise ValueError(f"ctx.throttle rate: {exc}") from None
        if limit is None:
            raise ValueError(f"ctx.throttle: platform {self.platform_id!r} has no RATE_LIMIT; set one on its class "
                             'or give rate="10/s"')
        if self.throttler is None:
            return 0.0
        return self.throttler.take_one(platform_bucket(self.platform_id, key), limit)

    def cancel(self) -> None:
        """Mark the job cancelled (the worker does this when its supervisor relays a cancel)."""
        self._cancelled = True

    def checkpoint(self, state: Any) -> None:
        """Store `state` (small, JSON-able) on the record now, atomically; a retry or resume gets it as `ctx.state`."""
        try:
            payload = json.dumps(state)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"checkpoint state must be JSON-able ({exc}); keep ids, offsets and dates as text"
            ) from None
        masked = mask_json(payload, self.secrets)  # the record shows it: a secret in it comes back as "***"
        if masked != payload:
            payload, state = masked, json.loads(masked)
        if len(payload) > defaults.CHECKPOINT_MAX_BYTES:
            raise ValueError(
                f"checkpoint state is {len(payload)} bytes, over {defaults.CHECKPOINT_MAX_BYTES}; keep offsets "
                "and cursors in it, not data (datasets and storage are for data)"
            )

        def write(pipe: Any) -> None:
            self._store.update(self.job_id, {"checkpoint": state, "progress": self.progress_state()}, pipe)
            self._store.event(self.job_id, "checkpoint", pipe, attempt=self.attempt, bytes=len(payload))

        self.check_lease()
        until_written(lambda: self.write(write), wait_s=self._redis_wait_s, what=f"job {self.job_id}: checkpoint")
        self.state = state

    def save_state(self, state: dict[str, Any]) -> None:
        """Keep `state` (a JSON object of at most `STATE_MAX_BYTES`, no secret values) as the state the next run of
        this job's state key gets as `ctx.saved_state`. Written with the job's end, and only when it finishes: a run
        that fails, stops or retries leaves the saved state as it was. The last call wins, across waits too: a state
        saved before `ctx.wait_for` (or a wait for children) is kept with the job and written when a run after the
        wait finishes, unless that run saves another. A job without a state
        key (no `state_key` in its spec, not run by a schedule) keeps nothing; a warning says so."""
        self.check_lease()
        payload = encode_state(state, secrets=self.secrets)
        if self.state_key is None:
            if self.state_to_save is None:
                self.log.warning("ctx.save_state: this job has no state key (give its spec a state_key, or run it "
                                 "from a schedule); the state is not kept for a next run")
            self.state_to_save = ""
            return
        self.state_to_save = payload

    def event(self, name: str, **data: Any) -> None:
        """Add an event of the platform's own to the job's events (`GET /execution/events`), written now:
        `{"type": name, "origin": "platform", **data}`. `name` is lowercase (letters, digits, `_.-`) and not one
        of the service's own types; `data` is JSON-able, at most `EVENT_MAX_BYTES` as JSON, secrets masked. The first
        `PLATFORM_EVENTS_PER_JOB` of an attempt are kept; later ones are dropped, with one warning on `ctx.log`."""
        if not isinstance(name, str) or not EVENT_NAME.match(name):
            raise ValueError(f"event name {name!r} must be 1-64 lowercase letters, digits, '_', '.' or '-', "
                             "starting with a letter")
        if name in SERVICE_EVENTS:
            raise ValueError(f"event name {name!r} is one of the service's own events; name it after what the "
                             "platform saw, e.g. 'page_fetched'")
        taken = sorted(set(data) & {"id", "at", "type", "origin"})
        if taken:
            raise ValueError(f"event {name!r}: {', '.join(taken)} name the event's own fields; call the data "
                             "something else")
        try:
            payload = json.dumps(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event {name!r}: its data must be JSON-able ({exc})") from None
        if len(payload) > defaults.EVENT_MAX_BYTES:
            raise ValueError(f"event {name!r} carries {len(payload)} bytes of data, over {defaults.EVENT_MAX_BYTES}; "
                             "keep counts and ids in events, data in datasets")
        self._events += 1
        if self._events > defaults.PLATFORM_EVENTS_PER_JOB:
            if self._events == defaults.PLATFORM_EVENTS_PER_JOB + 1:
                self.log.warning("more than %d ctx.event calls: later ones are not kept",
                                 defaults.PLATFORM_EVENTS_PER_JOB)
            return
        shown = json.loads(mask_json(payload, self.secrets))
        self.check_lease()
        until_written(lambda: self.write(lambda pipe: self._store.event(self.job_id, name, pipe, origin="platform",
                                                                        **shown)),
                      wait_s=self._redis_wait_s, what=f"job {self.job_id}: event {name}")

    def wait_for(self, name: str, *, prompt: str = "", timeout_s: float | None = None, state: Any = _KEEP,
                 expects: Mapping[str, str] | None = None) -> Any:
        """The input a client sent for `name` (`POST /execution/resume`); until one came, the job waits.

        Waiting ends this attempt: the job is recorded `waiting` with `prompt` and a single-use resume token,
        and its worker is free. A resume queues the job again and `_run` starts over with `ctx.state` (the
        last checkpoint; give `state=` to checkpoint it here) and `ctx.inputs[name]`, so work done before the
        wait is skipped by looking at `ctx.state`. No input within `timeout_s` fails the job. `expects` says what
        the input should hold (field name → what it is), shown with the prompt to whoever resumes the job."""
        self.check_lease()
        if not isinstance(name, str) or not WAIT_NAME.match(name):
            raise ValueError(f"wait_for name {name!r} must be 1-64 letters, digits, '.', '-' or '_'")
        if name in self.inputs:
            return self.inputs[name]
        if not isinstance(prompt, str) or len(prompt) > 2000:
            raise ValueError("wait_for prompt must be a string of at most 2000 characters")
        timeout = _wait_timeout(timeout_s, defaults.WAIT_TIMEOUT_S)
        if expects is not None and not (isinstance(expects, Mapping) and len(expects) <= 50 and all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 500
                for k, v in expects.items())):
            raise ValueError("wait_for expects must map up to 50 input field names to what each holds, as text")
        if self._links is None or not self._links.can_take_input:
            raise ValueError(
                "ctx.wait_for needs COLLECTOR_SECRET_KEY (resume tokens are derived and inputs sealed with it); "
                "set it for the API and the workers"
            )
        if state is not _KEEP:
            self.checkpoint(state)
        raise JobSuspended({"kind": "input", "name": name, "prompt": mask_text(prompt, self.secrets),
                            **({"expects": dict(expects)} if expects else {}),
                            "timeout_s": timeout})

    def spawn(self, platform_id: str, settings: Mapping[str, Any] | None = None, *,
              retry: Mapping[str, Any] | None = None, timeout_s: int | None = None) -> str:
        """Queue a sub-job (validated like any job spec) and return its id; `wait_children()` collects it.

        Ids are derived from this job's id and a spawn counter, so a resumed or retried job that spawns the
        same children in the same order gets the same ids back and nothing is queued twice."""
        self.check_lease()
        if self._links is None:
            raise ValueError("ctx.spawn needs a worker (a job run through the queue)")
        # The record is asked too: a cancel reaches this process a moment after it is answered, and a child queued
        # in between would not be among the children the cancel stopped.
        if self._cancelled or self._store.read(self.job_id, "cancel_requested_at").get("cancel_requested_at"):
            self._cancelled = True
            raise JobCancelledError(f"job {self.job_id} was cancelled; spawning nothing more")
        if self._spawned >= defaults.SPAWN_MAX_CHILDREN:
            raise ValueError(f"a job may spawn at most {defaults.SPAWN_MAX_CHILDREN} sub-jobs")
        child_id = child_job_id(self.job_id, self._spawned)
        self._spawned += 1
        body: dict[str, Any] = {"platform_id": platform_id, "settings": dict(settings or {})}
        if retry is not None:
            body["retry"] = dict(retry)
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        self._links.spawn(self.job_id, child_id, body)
        if child_id not in self.children:
            self.children.append(child_id)
            until_written(lambda: self.write(lambda pipe: self._store.update(self.job_id, {"children": self.children},
                                                                             pipe)),
                          wait_s=self._redis_wait_s, what=f"job {self.job_id}: children")
        return child_id

    def wait_children(self, *, raise_on_failure: bool = True, timeout_s: float | None = None
                      ) -> dict[str, dict[str, Any]]:
        """Once every sub-job ended: child id → `{"status", "platform_id", "result" or "error"}`.

        Until then the job waits (its worker is free) and is queued again when the last child ends; `_run`
        starts over, and `spawn` hands back the same ids. A child that did not finish raises `ChildJobError`
        naming it, unless `raise_on_failure=False`: then the statuses are returned for the platform to judge."""
        self.check_lease()
        if not self.children:
            return {}
        if self._links is None:
            raise ValueError("ctx.wait_children needs a worker (a job run through the queue)")
        found = self._links.read_children(self.children)
        pending = [c for c in self.children if found[c]["status"] not in ENDED]
        if pending:
            raise JobSuspended({"kind": "children", "children": pending,
                                "timeout_s": None if timeout_s is None else _wait_timeout(timeout_s, None)})
        failed = [c for c in self.children if found[c]["status"] != "finished"]
        if failed and raise_on_failure:
            first = found[failed[0]]
            error = first.get("error") or {}
            more = f" (and {len(failed) - 1} more: {', '.join(failed[1:4])})" if len(failed) > 1 else ""
            raise ChildJobError(
                f"child job {failed[0]} ({first.get('platform_id')}) ended {first['status']}: "
                f"{error.get('type', 'error')}: {error.get('message', 'no details')}{more}"
            )
        return found

    def add_secrets(self, values: Iterable[str]) -> None:
        """Values to mask wherever this job's data shows: log lines (of any logger in this process, until the
        job ends), errors, events, the result, checkpoints and datasets (those kept already included)."""
        added = remember(v for v in values if v)
        self._remembered += added
        self.secrets.extend(added)
        self.log.secrets = self.secrets
        for name, kept in self._datasets.items():
            self._datasets[name] = masked(kept, lambda text: mask_json(text, added))

    def release_secrets(self) -> None:
        """The job ended: log lines of this process stop masking what `add_secrets` gave."""
        forget(self._remembered)
        self._remembered = []

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report `done` units of work out of `total`; written to the record a few times a second at most."""
        if self.lease is not None and self.lease.lost is not None:  # inline: called in tight loops
            self.check_lease()
        if self._cancelled:
            raise JobCancelledError(f"job {self.job_id} was cancelled; stopping")
        self._done = done
        if total is not None:
            self._total = total
        if message is not None:
            self._message = message
        if time.monotonic() >= self._next_write:
            self.flush()
            self.check_lease()

    def masked_rows(self, rows: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        """`rows` as the job's storage targets get them: with its secret values masked, as its datasets have them
        (a source may echo a connection's token back in what it answers)."""
        return masked_rows(rows, self.secrets)

    def count_stored(self, rows: int) -> None:
        """Told by storage backends of each batch they committed."""
        self.check_lease()
        self.stored_rows += rows
        if time.monotonic() >= self._next_write:
            self.flush()

    def dataset(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Keep `rows` as the job's `original` or `processed` dataset (written when the job ends).

        At most `COLLECTOR_DATASET_MAX_ROWS` rows and `COLLECTOR_DATASET_MAX_BYTES` of JSON are kept: the first
        rows, flagged `truncated` with the `total_rows` given, and a warning on the job's log."""
        self.check_lease()
        if name not in DATASETS:
            raise ValueError(f"dataset {name!r} is not one of {list(DATASETS)}; name it 'original' or 'processed'")
        kept = keep_rows(rows, **self._dataset_caps, mask=lambda text: mask_json(text, self.secrets))
        self._datasets[name] = kept
        if kept.truncated:
            self.log.warning(cut_note(name, kept, **self._dataset_caps))

    def progress_state(self) -> dict[str, Any]:
        """`{"done", "total", "percent", "message", "eta_s"}`, with the ETA from the rate so far."""
        done, total = self._done, self._total
        percent = eta = None
        if total:
            percent = round(min(100.0, 100.0 * done / total), 2)
            elapsed = time.monotonic() - self._started
            if done and elapsed > 0 and done < total:
                eta = round((total - done) * elapsed / done, 2)
            elif done >= total:
                eta = 0.0
        message = self._message if self._message is None else mask_text(str(self._message), self.secrets)
        return {"done": done, "total": total, "percent": percent, "message": message, "eta_s": eta}

    def flush(self) -> None:
        """Write progress now. A Redis hiccup is logged, not raised: the job goes on and writes later. A lost lease
        is not raised here either: the run's next `ctx` call raises it."""
        self._next_write = time.monotonic() + self._interval
        fields: dict[str, Any] = {"progress": self.progress_state()}
        if self.stored_rows:
            fields["stored_rows"] = self.stored_rows
        try:
            if self.lease is None:
                self._store.update(self.job_id, fields)
            elif self.lease.lost is None:
                self.lease.write(lambda pipe: self._store.update(self.job_id, fields, pipe))
        except REDIS_WAITS as exc:
            why = "Redis is full" if isinstance(exc, redis.exceptions.OutOfMemoryError) else f"{exc}"
            log.warning("job %s: progress not written (%s); will try again", self.job_id, why)

    def final_fields(self) -> dict[str, Any]:
        """The progress fields written with the job's end state."""
        return {"progress": self.progress_state(), "stored_rows": self.stored_rows}

    @property
    def datasets(self) -> dict[str, KeptDataset]:
        return self._datasets


def child_job_id(parent_id: str, n: int) -> str:
    """The id of the `n`-th sub-job of `parent_id`: the same on every attempt, a valid job id at any depth."""
    child = f"{parent_id}-c{n}"
    if JOB_ID.fullmatch(child):
        return child
    return "c" + hashlib.sha256(child.encode()).hexdigest()[:40]


def _wait_timeout(timeout_s: float | None, default: float | None) -> float | None:
    if timeout_s is None:
        return default
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s:
        raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
    if timeout_s > defaults.WAIT_MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s={timeout_s!r} is over the longest wait, {defaults.WAIT_MAX_TIMEOUT_S} s")
    return float(timeout_s)


def until_written(write: Callable[[], T], *, wait_s: float, what: str) -> T:
    """Run `write`, retrying while Redis is unreachable or full, for at most `wait_s` seconds (then the error is
    raised). A full Redis (maxmemory with noeviction answers OOM) refuses a MULTI as a whole, so a retry never
    writes twice; it takes writes again once records expire or the operator frees memory."""
    deadline = time.monotonic() + wait_s
    pause = 0.1
    while True:
        try:
            return write()
        except REDIS_WAITS as exc:
            if time.monotonic() + pause > deadline:
                raise
            # An OOM error quotes the refused command, rows included: say what happened, not what was sent.
            why = ("Redis is full (maxmemory: writes refused)" if isinstance(exc, redis.exceptions.OutOfMemoryError)
                   else f"Redis unreachable ({exc})")
            log.warning("%s not written yet, %s; retrying in %.1f s", what, why, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
