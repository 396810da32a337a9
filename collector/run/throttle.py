"""The rate limits of one running job: tokens taken from Redis' buckets, waits slept in the worker, back-offs told.

The worker installs it (`collector.rates.install`) for the length of the job: `collector.http_client` takes a token
of the platform's bucket (its `RATE_LIMIT`) and of the connection's (its `rate_limit`) before each request, and
`ctx.throttle(key)` takes one of any bucket of the platform. A wait is slept here, in slices, so a cancel or a lost
lease stops it at once; a turn further off than `COLLECTOR_RATE_MAX_WAIT_S` is not waited for: the job is retried
later (`RateWaitError`). Nothing is written to the job's record while it waits: its fenced writes are unchanged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from collector.errors import RateWaitError
from collector.rates import Rate
from collector.run.context import until_written
from collector.store.buckets import Buckets

SLICE_S = 0.2          # a waiting job looks at its cancel and lease this often
TOLD_WAIT_S = 5.0      # a wait this long or longer is noted on the job's log


class JobThrottle:
    """Takes tokens for one job: of its own buckets (the platform's) and of those a request names."""

    def __init__(
        self,
        buckets: Buckets,
        *,
        own: Mapping[str, Rate],
        max_wait_s: float,
        interrupt: Callable[[], None],
        log: logging.LoggerAdapter | logging.Logger,
        redis_wait_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.buckets = buckets
        self.own = dict(own)
        self.max_wait_s = max_wait_s
        self.interrupt = interrupt  # raises once the job is cancelled or lost its lease
        self.log = log
        self.redis_wait_s = redis_wait_s
        self.sleep = sleep
        self.waited_s = 0.0  # slept for tokens over the whole job

    def take(self, buckets: Mapping[str, Rate]) -> list[str]:
        """Wait for a token of the job's own buckets and of `buckets` (one turn of each); the names taken."""
        wanted = {**self.own, **buckets}
        self.wait_turn(wanted)
        return list(wanted)

    def take_one(self, name: str, rate: Rate) -> float:
        """Wait for a token of the bucket `name` only (`ctx.throttle`); the seconds waited."""
        return self.wait_turn({name: rate})

    def back_off(self, buckets: list[str], seconds: float) -> None:
        """A source asked to wait `seconds` (HTTP 429 or 503 with `Retry-After`): `buckets` stay empty that long,
        for every job of every pool."""
        if not buckets:
            return
        until_written(lambda: self.buckets.back_off(buckets, seconds), wait_s=self.redis_wait_s,
                      what=f"rate limit back-off of {', '.join(buckets)}")
        self.log.warning("the source asked to wait %.1f s: %s hold no token until then, for every pool",
                         seconds, ", ".join(buckets))

    def wait_turn(self, rates: Mapping[str, Rate]) -> float:
        """Reserve a turn of every bucket in `rates` and sleep until it; a back-off that came meanwhile voids the
        turn and the job queues again. The seconds waited."""
        if not rates:
            return 0.0
        what = f"rate limit token of {', '.join(rates)}"
        waited = 0.0
        while True:
            self.interrupt()
            granted, wait_s = until_written(lambda: self.buckets.take(rates, max_wait_s=self.max_wait_s),
                                            wait_s=self.redis_wait_s, what=what)
            if not granted:
                raise self.too_far(rates, wait_s)
            if wait_s >= TOLD_WAIT_S:
                self.log.info("waiting %.1f s for a token of %s", wait_s, ", ".join(rates))
            self.sleep_until(time.monotonic() + wait_s)
            waited += wait_s
            if wait_s <= 0 or until_written(lambda: self.buckets.held_for(rates), wait_s=self.redis_wait_s,
                                            what=what) <= 0:
                break
        self.waited_s += waited
        return waited

    def too_far(self, rates: Mapping[str, Rate], wait_s: float) -> RateWaitError:
        names = ", ".join(f"{name} ({rate})" for name, rate in rates.items())
        return RateWaitError(
            f"the rate limit of {names} has its next token in {wait_s:.0f} s, later than "
            f"COLLECTOR_RATE_MAX_WAIT_S={self.max_wait_s:g} s a job waits for one; the job is retried later",
            details={"buckets": list(rates), "wait_s": round(wait_s, 3)})

    def sleep_until(self, deadline: float) -> None:
        """Sleep until `deadline` (monotonic), looking at cancel and lease every `SLICE_S`."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sleep(min(left, SLICE_S))
            self.interrupt()
