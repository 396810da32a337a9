"""Idempotency keys of submits: which job a key made first, and an HMAC of that job's spec, for a while.

Neither the key nor the spec is kept in plain text: the Redis key is an HMAC of the caller's name and the key,
the value holds the first job's id and an HMAC of the canonical spec, both under the service's secret key, so a
spec's secrets never reach Redis this way and nobody without the secret key can test guesses against them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from redis.client import Pipeline

from collector.store.records import Keys


def digest(secret_key: str | None, *parts: Any) -> str:
    """An HMAC-SHA256 (hex) of `parts` as canonical JSON under `secret_key` (without one, a plain SHA-256: a
    service with no secret key takes no secrets in its specs)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hmac.new((secret_key or "").encode(), text, hashlib.sha256).hexdigest()


def key_for(keys: Keys, secret_key: str | None, *, scope: str, idempotency_key: str) -> str:
    """The Redis key of `idempotency_key` as sent by `scope` (the caller: one caller's keys never meet another's)."""
    return keys.idempotency(digest(secret_key, "idempotency-key", scope, idempotency_key))


def first(pipe: Pipeline, key: str) -> tuple[str, str] | None:
    """The first job of the key and its spec's HMAC: `(job_id, spec_hmac)`, or None when the key is unused or
    expired (immediate mode: the caller has WATCHed `key`)."""
    raw = pipe.get(key)
    if raw is None:
        return None
    held = json.loads(raw)
    return str(held["job_id"]), str(held["spec_hmac"])


def remember(pipe: Pipeline, key: str, *, job_id: str, spec_hmac: str, ttl_s: int) -> None:
    """The key names `job_id`, made from the spec whose HMAC is `spec_hmac`, for `ttl_s` (in the caller's MULTI)."""
    pipe.set(key, json.dumps({"job_id": job_id, "spec_hmac": spec_hmac}), ex=ttl_s)
