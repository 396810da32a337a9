"""Schedules: a job spec run on a cron expression or an interval, exactly once per tick across all processes."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from croniter import CroniterBadDateError, croniter
from redis.client import Pipeline

from collector.errors import CollectorError, ConflictError, NotFoundError, ValidationError
from collector.masking import forget, mask_error, remember
from collector.specs.job import check_priority, validate_spec
from collector.specs.notify import check_notify
from collector.specs.secrets import merge_secrets, secret_values, split_secrets
from collector.store.records import run_watched
from collector.submit.submitter import Submitter
from collector.types import iso

log = logging.getLogger(__name__)

SCHEDULE_FIELDS = {"name", "spec", "cron", "interval_s", "notify", "priority"}
MAX_INTERVAL_S = 366 * 24 * 3600  # a year and a day: longer intervals are better said with cron
CRON_SAMPLE_TICKS = 500           # ticks of a cron looked at for its shortest gap (a gap pattern repeats daily)
CRON_SAMPLE_S = 2 * 366 * 24 * 3600  # ... and no further ahead than this (sparse crons need few ticks)


def next_tick(*, cron: str | None, interval_s: int | None, anchor: float, after: float) -> float:
    """The first tick strictly after `after`: cron times, or `anchor + k * interval_s`."""
    if cron:
        start = dt.datetime.fromtimestamp(after, dt.UTC)
        return croniter(cron, start).get_next(dt.datetime).timestamp()
    assert interval_s
    steps = math.floor((after - anchor) / interval_s) + 1
    return anchor + max(steps, 1) * interval_s


def shortest_gap(cron: str, *, start: float, below: float) -> float:
    """The shortest time between two ticks of `cron` found in its next ticks; stops early once under `below`."""
    ticks = croniter(cron, dt.datetime.fromtimestamp(start, dt.UTC))
    previous = ticks.get_next(float)
    shortest = math.inf
    for _ in range(CRON_SAMPLE_TICKS):
        tick = ticks.get_next(float)
        shortest = min(shortest, tick - previous)
        if shortest < below or tick > start + CRON_SAMPLE_S:
            break
        previous = tick
    return shortest


def validate_schedule(body: Any, submitter: Submitter) -> dict[str, Any]:
    """Check a schedule body; every problem at once, each under its path (`spec.settings.rows`, `cron`)."""
    if not isinstance(body, dict):
        raise ValidationError("a schedule must be a JSON object", details={"_schema": ["send an object"]})
    errors: dict[str, list[str]] = {k: ["Unknown field."] for k in sorted(set(body) - SCHEDULE_FIELDS)}
    cron, interval = body.get("cron"), body.get("interval_s")
    least = submitter.config.schedule_min_interval_s
    if (cron is None) == (interval is None):
        errors["cron"] = ["give exactly one of cron (e.g. '0 * * * *') or interval_s (seconds)"]
    elif cron is not None and not (isinstance(cron, str) and croniter.is_valid(cron)):
        errors["cron"] = [f"{cron!r} is not a cron expression; use five fields like '*/15 * * * *'"]
    elif cron is not None and not _ever_due(cron):
        errors["cron"] = [f"{cron!r} never comes due (a date that does not exist, like 30 February)"]
    elif cron is not None and (gap := shortest_gap(cron, start=time.time(), below=least)) < least:
        errors["cron"] = [f"{cron!r} has ticks {gap:g} s apart; two ticks must be at least {least} s apart "
                          "(COLLECTOR_SCHEDULE_MIN_INTERVAL_S)"]
    elif interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, int) or not least <= interval <= MAX_INTERVAL_S
    ):
        errors["interval_s"] = [f"give a whole number of seconds from {least} (COLLECTOR_SCHEDULE_MIN_INTERVAL_S) "
                                f"to {MAX_INTERVAL_S} (got {interval!r})"]
    name = body.get("name")
    if name is not None and not (isinstance(name, str) and 0 < len(name) <= 200):
        errors["name"] = ["give a name of 1 to 200 characters"]
    if body.get("notify") is not None:  # the targets of every job the schedule makes (over the spec's own)
        errors.update(check_notify(body["notify"]))
    if "priority" in body:  # the lane of every job the schedule makes (over the spec's own)
        errors.update(check_priority(body["priority"]))
    if isinstance(body.get("spec"), dict) and "idempotency_key" in body["spec"]:
        errors["spec.idempotency_key"] = ["a schedule makes a new job on every tick: leave idempotency_key out "
                                          "(each tick runs once across all processes already)"]
    if "spec" not in body:
        errors["spec"] = ["Missing data for required field: the job spec to run on each tick."]
    else:
        try:
            validate_spec(body["spec"], submitter.registry, max_timeout_s=submitter.config.max_timeout_s)
        except ValidationError as exc:
            errors.update({f"spec.{path}": messages for path, messages in exc.details.items()})
    if errors:
        raise ValidationError(
            f"the schedule has {len(errors)} error(s); fix the fields named in details and send it again",
            details=errors,
        )
    return body


def _ever_due(cron: str) -> bool:
    try:
        next_tick(cron=cron, interval_s=None, anchor=time.time(), after=time.time())
    except CroniterBadDateError:
        return False
    return True


class Schedules:
    """Stores schedules and fires their due ticks. Any number of processes may call `fire_due`."""

    def __init__(self, submitter: Submitter) -> None:
        self.submitter = submitter
        self.connection = submitter.connection
        self.keys = submitter.store.keys

    def create(self, body: Any, *, now: float | None = None, admit: Callable[[], None] | None = None
               ) -> dict[str, Any]:
        """Store a schedule; `admit` is called once it is valid, before anything is written."""
        validate_schedule(body, self.submitter)
        spec = validate_spec(body["spec"], self.submitter.registry, max_timeout_s=self.submitter.config.max_timeout_s)
        self.submitter.refuse_a_schedules_state(spec.state_key, field="spec.state_key")
        masked, secrets = split_secrets(spec)
        stored_spec = {**body["spec"], "settings": masked}
        if body.get("notify") is not None:
            stored_spec["notify"] = body["notify"]
        if body.get("priority") is not None:
            stored_spec["priority"] = body["priority"]
        schedule_id = uuid.uuid4().hex[:16]
        now = time.time() if now is None else now
        due = next_tick(cron=body.get("cron"), interval_s=body.get("interval_s"), anchor=now, after=now)
        fields = {
            "id": schedule_id,
            "name": body.get("name") or spec.platform.id,
            "spec": json.dumps(stored_spec),
            "cron": body.get("cron") or "",
            "interval_s": body.get("interval_s") or "",
            "anchor": now,
            "created_at": iso(),
            "runs": 0,
        }
        if secrets:
            if self.submitter.sealer is None:
                raise ValidationError("the spec has secrets but the service has no COLLECTOR_SECRET_KEY")
            fields["secrets"] = self.submitter.sealer.seal(secrets)
        if admit is not None:
            admit()
        run_watched(self.connection, lambda pipe: self._add(pipe, schedule_id, fields, due))
        return self.get(schedule_id)

    def _add(self, pipe: Pipeline, schedule_id: str, fields: dict[str, Any], due: float) -> None:
        """Store a new schedule unless the service holds `COLLECTOR_MAX_SCHEDULES` already (WATCHed count)."""
        most = self.submitter.config.max_schedules
        pipe.watch(self.keys.schedules_due())
        held = pipe.zcard(self.keys.schedules_due())
        if most and held >= most:
            pipe.unwatch()
            raise ConflictError(
                f"the service holds {held} schedules, the most COLLECTOR_MAX_SCHEDULES={most} allows; delete one "
                "you no longer need (DELETE /schedules/ID) or ask the operator to raise the limit",
                details={"schedules": held, "max_schedules": most},
            )
        pipe.multi()
        pipe.hset(self.keys.schedule(schedule_id), mapping={k: str(v) for k, v in fields.items()})
        pipe.zadd(self.keys.schedules_due(), {schedule_id: due})
        pipe.execute()

    def get(self, schedule_id: str) -> dict[str, Any]:
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.schedule(schedule_id))
            pipe.zscore(self.keys.schedules_due(), schedule_id)
            raw, due = pipe.execute()
        if not whole(raw):
            raise NotFoundError(f"no schedule {schedule_id!r}; GET /schedules lists them")
        return self._view(raw, due)

    def all(self) -> list[dict[str, Any]]:
        entries = self.connection.zrange(self.keys.schedules_due(), 0, -1, withscores=True)
        with self.connection.pipeline(transaction=False) as pipe:
            for schedule_id, _ in entries:
                pipe.hgetall(self.keys.schedule(schedule_id.decode()))
            raws = pipe.execute()
        return [self._view(raw, due) for raw, (_, due) in zip(raws, entries, strict=True) if whole(raw)]

    def delete(self, schedule_id: str) -> None:
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.schedule(schedule_id))
            pipe.zrem(self.keys.schedules_due(), schedule_id)
            deleted, _ = pipe.execute()
        if not deleted:
            raise NotFoundError(f"no schedule {schedule_id!r}; GET /schedules lists them")

    def pause(self, schedule_id: str) -> dict[str, Any]:
        """Stop firing a schedule until it is resumed: its due time becomes +inf, which no tick reaches (a tick being
        fired meanwhile only ever raises a due time, so it cannot bring it back)."""
        self.get(schedule_id)  # NotFoundError when unknown

        def write(pipe: Pipeline) -> None:
            pipe.zadd(self.keys.schedules_due(), {schedule_id: math.inf}, xx=True)
            pipe.hsetnx(self.keys.schedule(schedule_id), "paused_at", iso())

        self._while_present(schedule_id, write)
        return self.get(schedule_id)

    def resume(self, schedule_id: str, *, now: float | None = None) -> dict[str, Any]:
        """Fire a paused schedule again, its next run computed from now: the next cron time, or one interval from
        now (ticks missed while paused are not run). A schedule that is not paused is left as it is."""
        record = self.get(schedule_id)
        if not record["paused"]:
            return record
        now = time.time() if now is None else now
        due = next_tick(cron=record["cron"], interval_s=record["interval_s"], anchor=now, after=now)

        def write(pipe: Pipeline) -> None:
            pipe.zadd(self.keys.schedules_due(), {schedule_id: due}, xx=True)
            pipe.hdel(self.keys.schedule(schedule_id), "paused_at")
            if record["interval_s"]:
                pipe.hset(self.keys.schedule(schedule_id), "anchor", str(now))

        self._while_present(schedule_id, write)
        return self.get(schedule_id)

    def _while_present(self, schedule_id: str, write: Callable[[Pipeline], None]) -> bool:
        """Apply `write` in one transaction, only while the schedule exists: a schedule deleted meanwhile is not
        brought back as a hash of a few fields, which no listing could read. False when it was gone."""

        def attempt(pipe: Pipeline) -> bool:
            pipe.watch(self.keys.schedule(schedule_id))
            if not pipe.exists(self.keys.schedule(schedule_id)):
                pipe.unwatch()
                return False
            pipe.multi()
            write(pipe)
            pipe.execute()
            return True

        return run_watched(self.connection, attempt)

    def fire_due(self, *, now: float | None = None) -> list[str]:
        """Submit one job for every due schedule; returns the job ids this call submitted.

        A tick is claimed with SET NX, so each tick runs once however many processes call this. The next
        due time is the first tick after *now*, so ticks missed while everything was down run once, not
        once per missed tick.
        """
        now = time.time() if now is None else now
        fired: list[str] = []
        for raw_id, due in self.connection.zrangebyscore(self.keys.schedules_due(), "-inf", now, withscores=True):
            schedule_id = raw_id.decode()
            try:
                job_id = self._fire(schedule_id, due, now)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception as exc:  # a broken schedule must not stop the others
                log.error("schedule %s: tick at %s not run: %s", schedule_id, due, exc)
                continue
            if job_id:
                fired.append(job_id)
        return fired

    def _fire(self, schedule_id: str, due: float, now: float) -> str | None:
        raw = self.connection.hgetall(self.keys.schedule(schedule_id))
        if not whole(raw):  # deleted (a hash of a few fields is what a write racing the delete left, once)
            with self.connection.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.schedules_due(), schedule_id)
                if raw:
                    pipe.delete(self.keys.schedule(schedule_id))
                pipe.execute()
            return None
        record = {k.decode(): v.decode() for k, v in raw.items()}
        tick = int(due)
        following = next_tick(
            cron=record["cron"] or None,
            interval_s=int(record["interval_s"]) if record["interval_s"] else None,
            anchor=float(record["anchor"]),
            after=now,
        )
        # GT: concurrent callers compute the same next tick; the due time only ever moves forward. XX: a schedule
        # deleted since it was read is not put back.
        self.connection.zadd(self.keys.schedules_due(), {schedule_id: following}, gt=True, xx=True)
        claim_ttl = max(3600, int(following - due) * 2)
        if not self.connection.set(self.keys.schedule_tick(schedule_id, tick), 1, nx=True, ex=claim_ttl):
            return None
        job_id = f"{schedule_id}-{tick}"
        if not self.connection.exists(self.keys.schedule(schedule_id)):
            return None  # deleted since it was read (a tick already submitting when DELETE answered still runs)
        if not self._submit(schedule_id, record, job_id=job_id, tick=tick):
            return None

        def count(pipe: Pipeline) -> None:
            pipe.hset(self.keys.schedule(schedule_id), mapping={"last_job_id": job_id, "last_run_at": iso()})
            pipe.hincrby(self.keys.schedule(schedule_id), "runs", 1)
            pipe.hdel(self.keys.schedule(schedule_id), "last_error")

        self._while_present(schedule_id, count)
        log.info("schedule %s: tick %s queued job %s", schedule_id, tick, job_id)
        return job_id

    def _submit(self, schedule_id: str, record: dict[str, str], *, job_id: str, tick: int) -> bool:
        """Submit the tick's job; False when its spec no longer passes (a platform's settings, a connection or the
        egress allow-list changed since the schedule was made, its sealed secrets no longer open): the schedule
        then shows why in `last_error`, its secret values masked, until a tick submits again."""
        spec = json.loads(record["spec"])
        secrets: list[str] = []
        try:
            if record.get("secrets") and self.submitter.sealer is not None:
                unsealed = self.submitter.sealer.unseal(record["secrets"])
                secrets = remember(secret_values(unsealed))
                spec["settings"] = merge_secrets(spec["settings"], unsealed)
            self.submitter.submit(spec, job_id=job_id, extra={"schedule_id": schedule_id})
            return True
        except redis.RedisError:
            raise
        except CollectorError as exc:
            error = mask_error(exc, secrets).to_dict()
            log.error("schedule %s: tick at %s submitted no job: %s %s", schedule_id, iso(tick), error["message"],
                      json.dumps(error["details"], default=str))
        except Exception as exc:  # logged while the secrets are masked; its text is not kept (it may quote them)
            log.exception("schedule %s: tick at %s failed unexpectedly", schedule_id, iso(tick))
            error = CollectorError(f"the tick failed unexpectedly ({type(exc).__name__}); the logs have the "
                                   "details").to_dict()
        finally:
            forget(secrets)
        noted = json.dumps({"at": iso(), "tick_at": iso(tick), **error}, default=str)
        self._while_present(schedule_id, lambda pipe: pipe.hset(self.keys.schedule(schedule_id), "last_error", noted))
        return False

    @staticmethod
    def _view(raw: dict[bytes, bytes], due: float | None) -> dict[str, Any]:
        record = {k.decode(): v.decode() for k, v in raw.items()}
        return {
            "id": record["id"],
            "name": record["name"],
            "spec": json.loads(record["spec"]),
            "cron": record["cron"] or None,
            "interval_s": int(record["interval_s"]) if record["interval_s"] else None,
            "created_at": record["created_at"],
            "next_run_at": iso(due) if due is not None and math.isfinite(due) else None,
            "paused": bool(record.get("paused_at")),
            "paused_at": record.get("paused_at"),
            "runs": int(record.get("runs", 0)),
            "last_job_id": record.get("last_job_id"),
            "last_run_at": record.get("last_run_at"),
            "last_error": json.loads(record["last_error"]) if record.get("last_error") else None,
        }


def whole(raw: dict[bytes, bytes]) -> bool:
    """Whether a schedule's hash is a whole schedule, not absent nor the few fields a write racing its delete
    could leave (every write now checks the schedule is there; this reads such a hash as no schedule)."""
    return b"id" in raw and b"spec" in raw
