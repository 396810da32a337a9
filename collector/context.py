"""The run context a platform's `_run` receives: progress, datasets, checkpoints, cancellation and a logger."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import redis

from collector import defaults
from collector.errors import JobCancelledError
from collector.masking import mask_text
from collector.state import DATASETS, JobStore

T = TypeVar("T")

log = logging.getLogger(__name__)


class MaskingLogger(logging.LoggerAdapter):
    """A logger that tags lines with the job and masks the job's secret values in every message."""

    def __init__(self, logger: logging.Logger, *, job_id: str, platform_id: str, secrets: Iterable[str]) -> None:
        super().__init__(logger, {"job_id": job_id, "platform_id": platform_id})
        self.secrets = [s for s in secrets if s]

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
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
    ) -> None:
        self.job_id = job_id
        self.state = state  # the last checkpoint of an earlier attempt, None on a first run
        self.platform_id = platform_id
        self.attempt = attempt
        self.secrets = [s for s in secrets if s]
        self.log = MaskingLogger(
            logger or logging.getLogger(f"platforms.{platform_id}"),
            job_id=job_id,
            platform_id=platform_id,
            secrets=self.secrets,
        )
        self.stored_rows = 0
        self._store = store
        self._interval = interval_s
        self._done: float = 0
        self._total: float | None = None
        self._message: str | None = None
        self._started = time.monotonic()
        self._next_write = self._started + interval_s
        self._datasets: dict[str, tuple[int, bytes]] = {}
        self._cancelled = False
        self._redis_wait_s = redis_wait_s

    @property
    def cancelled(self) -> bool:
        """True once someone cancelled the job: stop soon (`progress` raises `JobCancelledError` from then on)."""
        return self._cancelled

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
        if len(payload) > defaults.CHECKPOINT_MAX_BYTES:
            raise ValueError(
                f"checkpoint state is {len(payload)} bytes, over {defaults.CHECKPOINT_MAX_BYTES}; keep offsets "
                "and cursors in it, not data (datasets and storage are for data)"
            )

        def write() -> None:
            with self._store.connection.pipeline(transaction=True) as pipe:
                self._store.update(self.job_id, {"checkpoint": state, "progress": self.progress_state()}, pipe)
                self._store.event(self.job_id, "checkpoint", pipe, attempt=self.attempt, bytes=len(payload))
                pipe.execute()

        until_written(write, wait_s=self._redis_wait_s, what=f"job {self.job_id}: checkpoint")
        self.state = state

    def add_secrets(self, values: Iterable[str]) -> None:
        """Values to mask in this job's log lines and error texts."""
        self.secrets.extend(v for v in values if v)
        self.log.secrets = self.secrets

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report `done` units of work out of `total`; written to the record a few times a second at most."""
        if self._cancelled:
            raise JobCancelledError(f"job {self.job_id} was cancelled; stopping")
        self._done = done
        if total is not None:
            self._total = total
        if message is not None:
            self._message = message
        if time.monotonic() >= self._next_write:
            self.flush()

    def count_stored(self, rows: int) -> None:
        """Told by storage backends of each batch they committed."""
        self.stored_rows += rows
        if time.monotonic() >= self._next_write:
            self.flush()

    def dataset(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Keep `rows` as the job's `original` or `processed` dataset (written when the job ends)."""
        if name not in DATASETS:
            raise ValueError(f"dataset {name!r} is not one of {list(DATASETS)}; name it 'original' or 'processed'")
        rows = list(rows)
        self._datasets[name] = (len(rows), json.dumps(rows, default=str).encode())

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
        return {"done": done, "total": total, "percent": percent, "message": self._message, "eta_s": eta}

    def flush(self) -> None:
        """Write progress now. A Redis hiccup is logged, not raised: the job goes on and writes later."""
        self._next_write = time.monotonic() + self._interval
        fields: dict[str, Any] = {"progress": self.progress_state()}
        if self.stored_rows:
            fields["stored_rows"] = self.stored_rows
        try:
            self._store.update(self.job_id, fields)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("job %s: progress not written (%s); will try again", self.job_id, exc)

    def final_fields(self) -> dict[str, Any]:
        """The progress fields written with the job's end state."""
        return {"progress": self.progress_state(), "stored_rows": self.stored_rows}

    @property
    def datasets(self) -> dict[str, tuple[int, bytes]]:
        return self._datasets


def until_written(write: Callable[[], T], *, wait_s: float, what: str) -> T:
    """Run `write`, retrying while Redis is unreachable, for at most `wait_s` seconds (then the error is raised)."""
    deadline = time.monotonic() + wait_s
    pause = 0.1
    while True:
        try:
            return write()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s not written yet, Redis unreachable (%s); retrying in %.1f s", what, exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
