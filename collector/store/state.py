"""Incremental state: what the last successful run of a state key saved, handed to the next run of that key.

A run of a schedule (its key: the schedule id) or of a spec with a `state_key` reads the state saved for its
platform and key when it starts, and may save a new one; the new one is written with the run's end, fenced by
its lease, and only when the run finished. One key per platform and state key, so two platforms never read each
other's state, each expiring `COLLECTOR_STATE_TTL_S` after its last save.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from redis import Redis
from redis.client import Pipeline

from collector import defaults
from collector.masking import mask_json
from collector.store.records import Keys
from collector.types import iso

log = logging.getLogger(__name__)

STATE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
STATE_KEY_RULE = "1-128 letters, digits, '.', '-' or '_' (e.g. 'orders-eu')"


def state_key_problem(value: Any) -> str | None:
    """Why `value` is not a state key, or None when it is one."""
    if isinstance(value, str) and STATE_KEY.fullmatch(value):
        return None
    shown = value[:80] if isinstance(value, str) else value
    return f"state_key {shown!r} is not a state key; give {STATE_KEY_RULE}"


def encode_state(state: Any, *, secrets: Iterable[str] = ()) -> str:
    """`state` as the JSON kept for the next run; `ValueError` saying how to fix it when it is not a JSON object,
    is over `STATE_MAX_BYTES` or holds one of the job's secret values (kept in plain text, it would leak)."""
    if not isinstance(state, dict):
        raise ValueError(f"saved state must be a JSON object (a dict), not {type(state).__name__}; "
                         "e.g. {\"cursor\": \"2024-05-01T00:00:00\"}")
    try:
        payload = json.dumps(state, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"saved state must be JSON-able ({exc}); keep cursors and dates as text or numbers") from None
    if len(payload) > defaults.STATE_MAX_BYTES:
        raise ValueError(f"saved state is {len(payload)} bytes, over {defaults.STATE_MAX_BYTES}; keep cursors and "
                         "offsets in it, not data")
    if mask_json(payload, [s for s in secrets if s]) != payload:
        raise ValueError("saved state holds a secret value of the job; state is kept in plain text, so keep "
                         "cursors in it, never credentials")
    return payload


class States:
    """Reads, writes and resets saved states (`<prefix>:state:<platform_id>:<state_key>`)."""

    def __init__(self, connection: Redis, keys: Keys) -> None:
        self.connection = connection
        self.keys = keys

    def read(self, platform_id: str, state_key: str) -> dict[str, Any] | None:
        """`{"state", "saved_at", "job_id"}` saved for the platform and key, or None when there is none (a key that
        holds something else reads as an empty state, so the run's save writes over it)."""
        key = self.keys.state(platform_id, state_key)
        raw = self.connection.get(key)
        return None if raw is None else (_entry(key, raw) or {"state": {}})

    def save(self, pipe: Pipeline, *, platform_id: str, state_key: str, payload: str, job_id: str, ttl_s: int,
             found: bool) -> None:
        """Queue on `pipe` the write of `payload` (from `encode_state`) as the key's state, saved by `job_id`.
        `found`: whether the run started from a saved state. It writes over a state only then (SET XX), and
        where there was none only while there still is none (SET NX): a reset while the run ran holds, and of
        two first runs the first to finish sets the bookmark."""
        entry = f'{{"state":{payload},"saved_at":{json.dumps(iso())},"job_id":{json.dumps(job_id)}}}'
        pipe.set(self.keys.state(platform_id, state_key), entry, ex=ttl_s, xx=found, nx=not found)

    def of_key(self, platform_ids: Iterable[str], state_key: str) -> dict[str, dict[str, Any]]:
        """Platform id → its saved state for `state_key`, for the platforms that have one (one round trip)."""
        ids = sorted(platform_ids)
        if not ids:
            return {}
        keys = [self.keys.state(p, state_key) for p in ids]
        entries = {p: _entry(k, v) for p, k, v in zip(ids, keys, self.connection.mget(keys), strict=True)}
        return {p: entry for p, entry in entries.items() if entry is not None}

    def reset(self, platform_ids: Iterable[str], state_key: str) -> list[str]:
        """Forget the saved state of `state_key` for these platforms; the ids of those that had one."""
        ids = sorted(platform_ids)
        with self.connection.pipeline(transaction=True) as pipe:
            for platform_id in ids:
                pipe.delete(self.keys.state(platform_id, state_key))
            deleted = pipe.execute()
        return [p for p, n in zip(ids, deleted, strict=True) if n]


def _entry(key: str, raw: bytes | None) -> dict[str, Any] | None:
    """A saved state as read; None when there is none, or when what the key holds is not one (written by hand)."""
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or not isinstance(entry.get("state"), dict):
        log.warning("%s does not hold a saved state (not written by collector); taken as none", key)
        return None
    return entry
