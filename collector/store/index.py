"""The index of recent jobs (`collector:jobs`, a sorted set by creation time) and the listing built on it; the open
jobs (`collector:jobs:open`: those not yet ended), which the reaper's sweep reads.

Submitter.submit adds each job to the index in the same MULTI as its record. The index never grows
without bound: every write trims entries older than the longest a record can live, and a listing
removes entries whose record has already expired.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import time
from typing import Any

from redis import Redis
from redis.client import Pipeline

from collector import defaults
from collector.config import Config
from collector.errors import BadRequestError
from collector.store.records import Keys, decode_fields

# Every status a record can hold (RQ's words plus `waiting`).
PLATFORM_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")  # a Python module name
STATUSES = ("queued", "started", "finished", "failed", "stopped", "canceled", "deferred", "scheduled", "waiting")
# What one listed job shows: enough for a table; GET /execution/get has the rest.
LIST_FIELDS = ("status", "platform_id", "client_id", "progress", "created_at", "started_at", "ended_at", "error")


def horizon_s(config: Config) -> int:
    """How long after creation a job may still have a record: queued up to a timeout, run, then kept."""
    return max(config.record_ttl_s, config.failed_record_ttl_s) + 2 * config.job_timeout_s


def add(pipe: Pipeline, keys: Keys, config: Config, job_id: str, *, created: float | None = None) -> None:
    """Queue the index write for a new job on `pipe`, trimming entries past the records' lifetime."""
    created = time.time() if created is None else created
    pipe.zadd(keys.jobs_index(), {job_id: created})
    pipe.zremrangebyscore(keys.jobs_index(), "-inf", created - horizon_s(config))
    pipe.zadd(keys.open_jobs(), {job_id: created})


def reopen(pipe: Pipeline, keys: Keys, job_id: str) -> None:
    """An ended job runs again (a retry by hand): it is open again, for the sweep to watch."""
    pipe.zadd(keys.open_jobs(), {job_id: time.time()})


def close(pipe: Pipeline, keys: Keys, job_id: str) -> None:
    """The job ended: it leaves the open jobs."""
    pipe.zrem(keys.open_jobs(), job_id)


def open_jobs(connection: Redis, keys: Keys, *, before: float, after: tuple[float, str] | None,
              count: int) -> list[tuple[str, float]]:
    """Up to `count` open jobs created before `before`, oldest first, from past `after` (a score and id)."""
    low = "-inf" if after is None else after[0]
    rows = connection.zrangebyscore(keys.open_jobs(), low, before, start=0, num=count + 64, withscores=True)
    found = [(raw.decode(), score) for raw, score in rows]
    if after is not None:
        found = [(j, sc) for j, sc in found if (sc, j) > after]
    return found[:count]


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where a page ended: the score and id of the last job examined (the next page starts below it)."""

    score: float
    job_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.score!r}:{self.job_id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            score, _, job_id = raw.partition(":")
            if not job_id or not math.isfinite(float(score)):
                raise ValueError(raw)
            return cls(float(score), job_id)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise BadRequestError(
                f"cursor {text[:80]!r} is not a cursor this service made; pass the next_cursor of the previous page "
                "unchanged, or leave it out for the first page",
                details={"cursor": ["not a cursor"]},
            ) from None


def list_jobs(
    connection: Redis,
    keys: Keys,
    *,
    limit: int,
    cursor: Cursor | None = None,
    status: str | None = None,
    platform_id: str | None = None,
    scan: int = defaults.LIST_SCAN,
) -> dict[str, Any]:
    """Newest first, up to `limit` jobs matching the filters, reading at most `scan` index entries.

    `next_cursor` is set whenever entries remain below the page, also when the scan budget ran out
    before `limit` matches were found (so a rare status never makes one request read the whole index).
    """
    index = keys.jobs_index()
    filtered = bool(status or platform_id)
    jobs: list[dict[str, Any]] = []
    expired: list[str] = []
    examined, offset = 0, 0
    last: Cursor | None = cursor
    max_score = "+inf" if cursor is None else repr(cursor.score)
    exhausted = False
    while len(jobs) < limit and examined < scan and not exhausted:
        # Unfiltered pages need exactly what is missing; filtered ones read ahead, bounded by the scan budget.
        want = min(max(limit - len(jobs), 50), scan - examined) if filtered else limit - len(jobs)
        # Ties share a score: read from the cursor's score inclusive and skip what earlier pages showed.
        entries = connection.zrevrangebyscore(index, max_score, "-inf", start=offset, num=want, withscores=True)
        exhausted = len(entries) < want
        offset += len(entries)
        page = [
            (member.decode(), score)
            for member, score in entries
            if cursor is None or score != cursor.score or member.decode() < cursor.job_id
        ]
        with connection.pipeline(transaction=False) as pipe:
            for job_id, _ in page:
                pipe.hmget(keys.job(job_id), list(LIST_FIELDS))
            rows = pipe.execute() if page else []
        for (job_id, score), values in zip(page, rows, strict=True):
            examined += 1
            last = Cursor(score, job_id)
            record = decode_fields(LIST_FIELDS, values)
            if not record:
                expired.append(job_id)
            elif (not status or record.get("status") == status) and (
                not platform_id or record.get("platform_id") == platform_id
            ):
                jobs.append({"job_id": job_id, **{name: record.get(name) for name in LIST_FIELDS}})
                if len(jobs) == limit:
                    break
    if expired:
        connection.zrem(index, *expired)
    more = last is not None and last != cursor and _has_below(connection, index, last)
    return {"jobs": jobs, "next_cursor": last.encode() if more and last else None}


def read_jobs(connection: Redis, keys: Keys, job_ids: list[str], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Fields `names` of each job of `job_ids` (`{}` for one without a record), in one round trip."""
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), list(names))
        return [decode_fields(names, values) for values in pipe.execute()]


def _has_below(connection: Redis, index: str, last: Cursor) -> bool:
    """Whether any entry comes after `last` in newest-first order."""
    if connection.zcount(index, "-inf", f"({last.score!r}"):
        return True
    return any(m.decode() < last.job_id for m in connection.zrangebyscore(index, repr(last.score), repr(last.score)))
