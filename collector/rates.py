"""Rate limits (`"10/s"`, `"600/min"`, `"5000/h"`) and the throttle the jobs of this process take tokens from.

A platform's `RATE_LIMIT` and an HTTP connection's `rate_limit` are parsed here. The buckets themselves live in
Redis (`collector.store.buckets`); the worker installs a throttle bound to the running job (`install`), which
`collector.http_client` asks for a token before each request and tells of a source's `Retry-After`. Outside a job
(the API, tools) nothing is installed and requests are not throttled."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")
MAX_PER_S = 10_000.0      # faster than this is no limit worth a Redis round trip per request
MIN_PER_S = 1 / 86_400.0  # slower than one a day is a schedule, not a rate
EXAMPLE = '"10/s", "600/min" or "5000/h"'


@dataclasses.dataclass(frozen=True)
class Rate:
    """`count` requests per `per_s` seconds, spaced evenly: one every `interval_s`."""

    count: float
    per_s: float
    text: str

    @property
    def interval_s(self) -> float:
        return self.per_s / self.count

    def __str__(self) -> str:
        return self.text


def parse_rate(value: object) -> Rate:
    """`"10/s"`, `"600/min"`, `"5000/h"` (also `sec`, `second`, `minute`, `hour`; a decimal count such as
    `"0.5/s"`) as a `Rate`; `ValueError` saying what is wrong and how to write it."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a rate; write it as text: {EXAMPLE}")
    found = RATE.match(value.lower())
    if found is None or found.group(2) not in UNITS:
        raise ValueError(f"{value!r} is not a rate; write a number of requests, '/', and s, min or h: {EXAMPLE}")
    count, per_s = float(found.group(1)), UNITS[found.group(2)]
    if count <= 0:
        raise ValueError(f"{value!r} allows nothing; give a count above 0 (to stop a source, do not run it)")
    if not MIN_PER_S <= count / per_s <= MAX_PER_S:
        raise ValueError(f"{value!r} is {count / per_s:g} per second; a rate limit lies between one a day and "
                         f"{MAX_PER_S:g} per second")
    return Rate(count, per_s, value.strip())


def platform_bucket(platform_id: str, key: str | None = None) -> str:
    """The bucket of a platform (`platform:<id>`), or of one key of it (`platform:<id>:<key>`, `ctx.throttle`)."""
    return f"platform:{platform_id}" if key is None else f"platform:{platform_id}:{key}"


def connection_bucket(name: str) -> str:
    """The bucket of an operator's HTTP connection: shared by every platform and job that uses it."""
    return f"connection:{name}"


class Throttle(Protocol):
    """What `collector.http_client` asks before each request of a job, and tells of a source's back-off."""

    def take(self, buckets: Mapping[str, Rate]) -> list[str]:
        """Wait for a token of the running job's own buckets and of `buckets`; the names of all buckets taken."""

    def back_off(self, buckets: list[str], seconds: float) -> None:
        """Empty `buckets` for `seconds` (a source's `Retry-After`), for every pool."""


_lock = threading.Lock()
_throttle: Throttle | None = None


def install(throttle: Throttle | None) -> None:
    """Make `throttle` the one HTTP requests of this process take tokens from (None: not throttled)."""
    global _throttle
    with _lock:
        _throttle = throttle


def current() -> Throttle | None:
    with _lock:
        return _throttle


@contextmanager
def installed(throttle: Throttle | None) -> Iterator[Throttle | None]:
    """`throttle` installed for the length of a block (a job's run, tests), the previous one put back after."""
    before = current()
    install(throttle)
    try:
        yield throttle
    finally:
        install(before)
