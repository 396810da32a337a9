"""Incremental collection by a cursor field: which rows are newer than the last run's bookmark, and the newest seen.

A platform with a `cursor_field` setting builds an `Incremental` from `ctx.saved_state`, keeps the rows
`is_new` accepts, and ends with `ctx.save_state(incremental.state())`. The bookmark is kept with its kind, so a
datetime comes back as a datetime (and is bound to a SQL parameter as one), a number as a number.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any

from collector.errors import FatalError

KINDS = ("int", "float", "decimal", "datetime", "date", "str")


def kind_of(value: Any) -> str:
    """The bookmark kind of a cursor value; `FatalError` for a value that has no order (bool, list, object)."""
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal | dt.date | str):
        raise FatalError(f"cursor value {value!r} ({type(value).__name__}) cannot be ordered; the cursor field must "
                         "hold numbers, dates, datetimes or text (e.g. an ISO 8601 timestamp)")
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    return {int: "int", float: "float"}.get(type(value), "str")


def encode(value: Any) -> tuple[Any, str]:
    """A cursor value as JSON and its kind."""
    kind = kind_of(value)
    if kind in ("datetime", "date"):
        return value.isoformat(), kind
    return (str(value) if kind == "decimal" else value), kind


def decode(value: Any, kind: str) -> Any:
    """A bookmark read back (`encode`'s pair) as the value it was."""
    try:
        if kind == "datetime":
            return dt.datetime.fromisoformat(value)
        if kind == "date":
            return dt.date.fromisoformat(value)
        if kind == "decimal":
            return decimal.Decimal(value)
    except (TypeError, ValueError, decimal.InvalidOperation):
        raise FatalError(f"the saved bookmark {value!r} is not a {kind}; reset the state key (DELETE /state)") from None
    return value


def coerce(bookmark: Any, like: Any) -> Any:
    """`bookmark` (a value of an earlier run, or the `cursor_start` text) as the kind of the cursor value `like`."""
    kind = kind_of(like)
    if not isinstance(bookmark, str) or kind == "str":
        return bookmark
    try:
        if kind == "datetime":
            moment = dt.datetime.fromisoformat(bookmark)
            # A `cursor_start` without a time zone is taken in the values' (a database's timestamptz: its session's).
            return moment.replace(tzinfo=like.tzinfo) if moment.tzinfo is None else moment
        if kind == "date":
            return dt.date.fromisoformat(bookmark)
        if kind == "decimal":
            return decimal.Decimal(bookmark)
        return float(bookmark) if kind == "float" else int(bookmark)
    except (ValueError, decimal.InvalidOperation):
        raise FatalError(f"cursor_start {bookmark!r} is not a {kind}, the kind of the cursor field's values (e.g. "
                         f"{like!r}); give it in that form") from None


def newer(value: Any, than: Any) -> bool:
    """Whether cursor `value` comes after `than`; `FatalError` when the two cannot be compared."""
    if type(value) is type(than) and not isinstance(value, bool):
        return bool(value > than)  # the common case, once per row: no conversion to look for
    try:
        return bool(value > coerce(than, value))
    except TypeError:
        raise FatalError(f"cursor values {value!r} and {than!r} cannot be compared (a number with text, or a "
                         "datetime with a time zone with one without); keep one kind in the cursor field, or reset "
                         "the state key (DELETE /state) after changing it") from None


class Incremental:
    """One run's incremental mode: the bookmark it starts from (the saved one, else `start`) and the newest seen."""

    def __init__(self, field: str, *, start: str | None, saved: Mapping[str, Any]) -> None:
        if saved.get("cursor_field") not in (None, field):
            raise FatalError(f"the state key's saved bookmark is for cursor field {saved['cursor_field']!r}, not "
                             f"{field!r}; reset it (DELETE /state?key=...) or use another state_key")
        self.field = field
        self.since: Any = decode(saved["cursor"], saved.get("cursor_kind", "str")) if "cursor" in saved else start
        self.newest: Any = None

    def is_new(self, value: Any) -> bool:
        """Whether a row whose cursor is `value` is collected: newer than the bookmark (every row when there is
        none; a row without a cursor only then). Notes the newest value."""
        if value is None:
            return self.since is None
        self.note(value)
        if isinstance(self.since, str) and not isinstance(value, str):
            self.since = coerce(self.since, value)  # `cursor_start` as the values' kind, converted once
        return self.since is None or newer(value, self.since)

    def note(self, value: Any) -> None:
        """Note a cursor value of a row collected (by a database that compared it with the bookmark itself)."""
        if value is not None and (self.newest is None or newer(value, self.newest)):
            self.newest = value

    def bookmark(self) -> Any:
        """What the next run starts from: the newest cursor seen when it is newer than the one this run started
        from (rows older than the bookmark are noted too), else that one."""
        if self.newest is None or (self.since is not None and not newer(self.newest, self.since)):
            return self.since
        return self.newest

    def state(self) -> dict[str, Any]:
        """The state to save: the cursor field and the bookmark with its kind."""
        bookmark = self.bookmark()
        if bookmark is None:
            return {"cursor_field": self.field}
        value, kind = encode(bookmark)
        return {"cursor_field": self.field, "cursor": value, "cursor_kind": kind}

    def summary(self) -> dict[str, Any]:
        """For the job's result: the field, where this run started and where the next one will."""
        shown = {"since": self.since, "next": self.bookmark()}
        return {"cursor_field": self.field,
                **{k: (v if v is None or isinstance(v, int | float | str) else encode(v)[0]) for k, v in shown.items()}}
