"""Console sessions signed out before their cookie expires: a signed cookie stays valid by itself until then, so
each signed-out session's id is kept here for as long as its cookie could still be shown."""

from __future__ import annotations

from redis import Redis

from collector.store.records import Keys


def end(connection: Redis, keys: Keys, session_id: str, *, ttl_s: int) -> None:
    """Note the session `session_id` as signed out, for `ttl_s` seconds (its cookie's lifetime)."""
    connection.set(keys.console_session_ended(session_id), 1, ex=max(1, ttl_s))


def ended(connection: Redis, keys: Keys, session_id: str) -> bool:
    """Whether the session `session_id` was signed out."""
    return bool(connection.exists(keys.console_session_ended(session_id)))
