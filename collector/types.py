"""Setting types platforms and storage backends annotate their `__init__` with, and the one form of timestamps."""

from __future__ import annotations

import datetime as dt
import os
import re
import time

RELATIVE_DATE = re.compile(r"^\s*(\d+)\s+(day|days|week|weeks)\s+(back|ago)\s*$", re.IGNORECASE)
JOB_ID_V7 = re.compile(r"^[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}$")  # what new_job_id makes
# A job spec's concurrency key (an account, a tenant): what an operator names after `platform:` in
# COLLECTOR_CONCURRENCY, so no `,`, `=` or space.
CONCURRENCY_KEY = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
RELATIVE_WORDS = {"today": 0, "yesterday": 1, "tomorrow": -1}


class Secret(str):
    """A secret string: sealed before it reaches Redis, masked in every answer, log and repr.

    It is a `str`, so a platform uses it as one; only its `repr` hides the value, which keeps it out
    of tracebacks and debug output that format arguments with `%r`.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


def parse_date(value: object, *, today: dt.date | None = None) -> dt.date:
    """An ISO date, or `today`, `yesterday`, `N days back|ago`, `N weeks back|ago`, as a date.

    Relative expressions are resolved against `today` (the day the job runs when not given).
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date; give an ISO date like '2024-05-31' or 'yesterday'")
    text = value.strip().lower()
    today = today or dt.date.today()
    if text in RELATIVE_WORDS:
        return today - dt.timedelta(days=RELATIVE_WORDS[text])
    match = RELATIVE_DATE.match(text)
    if match:
        count, unit = int(match.group(1)), match.group(2)
        return today - dt.timedelta(days=count * (7 if unit.startswith("week") else 1))
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date; use an ISO date ('2024-05-31'), 'today', 'yesterday', "
            "'N days back' or 'N weeks back'"
        ) from None


def parse_datetime(value: object, *, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO datetime, or a relative date expression (midnight UTC of that day), as an aware datetime."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    try:
        day = parse_date(value, today=now.date())
    except ValueError:
        raise ValueError(
            f"{value!r} is not a datetime; use ISO 8601 ('2024-05-31T12:00:00Z') or a relative date "
            "('yesterday', '3 days back')"
        ) from None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def iso(epoch: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds (`2024-05-31T12:00:00.000Z`) of `epoch` (unix seconds), or of now: the one
    form every timestamp collector writes or shows takes."""
    moment = dt.datetime.fromtimestamp(time.time() if epoch is None else epoch, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id(epoch: float | None = None) -> str:
    """A new job id: a UUID version 7 in 32 hex digits, whose first 12 hold its creation time in milliseconds,
    so the id tells when it was made (`job_id_time`) and ids sort by creation. The rest is random."""
    ms = int((time.time() if epoch is None else epoch) * 1000) & (2**48 - 1)
    bits = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    bits = (bits & ~(0xF << 76)) | (0x7 << 76)  # version 7
    bits = (bits & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return f"{bits:032x}"


def job_id_time(job_id: str) -> float | None:
    """When the job `job_id` was created (unix seconds), for an id `new_job_id` made; None for any other id
    (earlier versions made random ids: they tell nothing)."""
    if not JOB_ID_V7.fullmatch(job_id):
        return None
    return int(job_id[:12], 16) / 1000
