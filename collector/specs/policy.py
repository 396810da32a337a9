"""Retry policies: the spec's `retry` field checked and resolved against the service defaults, and backoff delays."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from collector import defaults
from collector.config import Config

MAX_RETRIES = 25            # more retries than this is a loop, not a policy
MAX_DELAY_S = 24 * 3600     # no backoff waits longer than a day
RETRY_FIELDS = ("max", "backoff", "cap", "jitter")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how late a job is retried after a transient error or a worker death."""

    max: int
    backoff: float
    cap: float
    jitter: float

    @classmethod
    def resolve(cls, given: dict[str, Any] | None, config: Config) -> RetryPolicy:
        """The spec's (already validated) `retry` with the service defaults filled in."""
        given = given or {}
        return cls(
            max=int(given.get("max", config.retry_max)),
            backoff=float(given.get("backoff", config.retry_backoff_s)),
            cap=float(given.get("cap", max(config.retry_backoff_cap_s, given.get("backoff", 0)))),
            jitter=float(given.get("jitter", config.retry_jitter)),
        )

    @classmethod
    def from_record(cls, stored: dict[str, Any] | None, config: Config) -> RetryPolicy:
        return cls.resolve(stored, config)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def max_attempts(self) -> int:
        return self.max + 1

    def delay(self, retry_number: int, rand: float | None = None) -> float:
        """Seconds before retry number `retry_number` (1 for the first): exponential, capped, minus jitter."""
        base = min(self.cap, self.backoff * 2 ** max(0, retry_number - 1))
        r = random.random() if rand is None else rand
        return round(base * (1 - self.jitter * r), 3)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_retry(value: Any) -> dict[str, list[str]]:
    """Field errors of a spec's `retry`, keyed `retry.max` etc.; empty when it is fine."""
    if not isinstance(value, dict):
        return {"retry": ['give the retry policy as an object: {"max": 3, "backoff": 2, "cap": 60, "jitter": 0.1}']}
    errors: dict[str, list[str]] = {}
    for key in sorted(set(value) - set(RETRY_FIELDS)):
        errors[f"retry.{key}"] = [f"Unknown field; a retry policy has only {list(RETRY_FIELDS)}."]
    if "max" in value:
        got = value["max"]
        if not isinstance(got, int) or isinstance(got, bool) or not 0 <= got <= MAX_RETRIES:
            errors["retry.max"] = [f"give a whole number of retries from 0 to {MAX_RETRIES} (got {got!r})"]
    for key in ("backoff", "cap"):
        if key in value:
            got = value[key]
            if not _number(got) or not 0 <= got <= MAX_DELAY_S:
                errors[f"retry.{key}"] = [f"give seconds as a number from 0 to {MAX_DELAY_S} (got {got!r})"]
    if "jitter" in value:
        got = value["jitter"]
        if not _number(got) or not 0 <= got <= 1:
            errors["retry.jitter"] = [f"give the jitter as a fraction of the delay from 0 to 1 (got {got!r})"]
    if not errors and _number(value.get("cap")) and _number(value.get("backoff")) and value["cap"] < value["backoff"]:
        errors["retry.cap"] = [f"the cap ({value['cap']!r}) must not be below the backoff ({value['backoff']!r})"]
    return errors


def check_timeout(value: Any, max_s: int = defaults.MAX_TIMEOUT_S) -> dict[str, list[str]]:
    """Field errors of a spec's `timeout_s`: whole seconds up to `max_s` (COLLECTOR_MAX_TIMEOUT_S)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= max_s:
        return {"timeout_s": [f"give the job's timeout as whole seconds from 1 to {max_s} (got {value!r}); "
                              "COLLECTOR_MAX_TIMEOUT_S is the longest this service allows"]}
    return {}


def job_timeout(spec_timeout_s: int | None, platform_timeout_s: int | None, config: Config) -> int:
    """The timeout a job gets: the spec's, else the platform's `TIMEOUT_S`, else the service default; never
    more than `COLLECTOR_MAX_TIMEOUT_S` (a platform's longer `TIMEOUT_S` is cut to it)."""
    return min(spec_timeout_s or platform_timeout_s or config.job_timeout_s, config.max_timeout_s)
