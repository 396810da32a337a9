"""Per-caller submit rate: a fixed-window counter in Redis that every API process shares; 429 past it.

Job runs, connection checks, process runs and schedule creations count as submits, together."""

from __future__ import annotations

import math
import time

import redis

from collector import defaults
from collector.errors import RateLimitedError
from collector.store.records import Keys


def now() -> float:
    return time.time()


def count_submit(connection: redis.Redis, keys: Keys, who: str, *, per_minute: int, at: float | None = None) -> None:
    """Count one submit of `who` (one round trip); `RateLimitedError` when it is over `per_minute` in the window
    of `at` (now when not given)."""
    at = now() if at is None else at
    window = int(at // defaults.RATE_WINDOW_S)
    key = keys.submits(who, window)
    with connection.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, defaults.RATE_WINDOW_S)  # the window's number is in the key: it dies soon after it
        made, _ = pipe.execute()
    if made > per_minute:
        retry_after = max(1, math.ceil((window + 1) * defaults.RATE_WINDOW_S - at))
        raise RateLimitedError(
            f"{who!r} made {made} submits this minute, more than COLLECTOR_SUBMITS_PER_MINUTE={per_minute} allows "
            f"(job runs, checks, processes and schedules together); try again in {retry_after} s",
            retry_after_s=retry_after,
            details={"caller": who, "submits_per_minute": per_minute, "retry_after_s": retry_after},
        )
