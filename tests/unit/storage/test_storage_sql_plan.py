"""Insert plans of the SQL backends: how rows become the driver's parameter tuples."""

from __future__ import annotations

import datetime as dt
from operator import itemgetter
from typing import Any

import pytest

from storage.sql_plan import InsertPlan, batch_columns, rows_to_tuples, same_width
from storage.sql_types import sqlite_datetime, sqlite_datetimes

GETTERS = [itemgetter(i) for i in range(4)]


def test_rows_to_tuples_applies_processors_by_column_and_leaves_the_others() -> None:
    assert rows_to_tuples([(1, 2, 3, -4), (5, 6, 7, -8)], GETTERS, {1: str, 3: abs}) == [
        (1, "2", 3, 4), (5, "6", 7, 8)
    ]
    assert rows_to_tuples([], GETTERS, {1: str}) == []
    assert rows_to_tuples([{"a": 1}, {"a": 2}], [itemgetter("a")], {0: str}) == [("1",), ("2",)]


def test_rows_to_tuples_calls_processors_row_by_row() -> None:
    seen: list[tuple[str, Any]] = []

    def note(tag: str) -> Any:
        def process(value: Any) -> Any:
            seen.append((tag, value))
            if value == "bad":
                raise ValueError(f"{tag} cannot take {value}")
            return value

        return process

    processors = {0: note("a"), 2: note("c")}
    rows_to_tuples([(1, 0, 2), (3, 0, 4)], GETTERS[:3], processors)
    assert seen == [("a", 1), ("c", 2), ("a", 3), ("c", 4)]
    # The error raised is that of the first failing value row by row (column by column would fail on a).
    with pytest.raises(ValueError, match="c cannot take bad"):
        rows_to_tuples([(1, 0, 2), (5, 0, "bad"), ("bad", 0, 6)], GETTERS[:3], processors)


def test_whole_column_converter_replaces_the_per_value_processor_when_it_takes_the_column() -> None:
    calls: list[Any] = []

    def per_value(value: Any) -> Any:
        calls.append(value)
        return f"one {value}"

    def whole(column: list[Any]) -> list[Any]:
        if any(not isinstance(v, int) for v in column):
            raise TypeError("not all ints")
        return [f"all {v}" for v in column]

    def convert(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return rows_to_tuples(rows, GETTERS[:2], {1: per_value}, {1: whole})

    assert convert([(0, 1), (0, 2)]) == [(0, "all 1"), (0, "all 2")]
    assert calls == []
    # One refused value sends the whole column value by value, in row order.
    assert convert([(0, 1), (0, None)]) == [(0, "one 1"), (0, "one None")]
    assert calls == [1, None]


def test_sqlite_datetimes_match_the_per_value_text_and_refuse_anything_else() -> None:
    naive = [dt.datetime(2024, 5, 31, 23, 59, 58, 123456), dt.datetime(2024, 1, 1)]
    assert sqlite_datetimes(naive) == [sqlite_datetime(v) for v in naive]
    assert sqlite_datetimes(naive) == ["2024-05-31 23:59:58.123456", "2024-01-01 00:00:00.000000"]
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    for odd in (None, aware, dt.date(2024, 1, 1), "2024-01-01", dt.time(12)):
        with pytest.raises((TypeError, ValueError, AttributeError)):
            sqlite_datetimes([*naive, odd])


def test_batch_columns_name_every_key_in_first_seen_order() -> None:
    assert batch_columns([{"a": 1, "b": 2}, {"b": 4, "a": 3}]) == ["a", "b"]
    assert batch_columns([{"a": 1, "b": 2}, {"a": 3, "c": 4}]) == ["a", "b", "c"]
    assert batch_columns([{"a": 1}, {"a": 2, "b": 3}, {"a": 4, "b": 5}, {"d": 6}]) == ["a", "b", "d"]


def test_same_width_compares_key_counts_only() -> None:
    assert same_width([{"a": 1, "b": 2}, {"b": 4, "a": 3}])
    assert same_width([{"a": 1, "b": 2}, {"a": 3, "c": 4}])     # the strict params tell these apart
    assert not same_width([{"a": 1}, {"a": 2, "b": 3}])


@pytest.mark.parametrize("processors", [{}, {1: str}], ids=["plain", "converted"])
def test_plan_params_follow_the_plan_order(processors: dict[int, Any]) -> None:
    plan = InsertPlan("INSERT ...", ("b", "a"), processors, {})
    a = str if processors else (lambda v: v)
    assert plan.params([{"a": 1, "b": 2}, {"b": 3}]) == [(2, a(1)), (3, a(None))]   # missing: NULL
    assert plan.params([{"a": 1, "b": 2}, {"a": 3, "b": 4}], strict=True) == [(2, a(1)), (4, a(3))]
    with pytest.raises(KeyError):      # strict: a row without a column is not these rows' shape
        plan.params([{"a": 1, "b": 2}, {"a": 3, "c": 4}], strict=True)
    only = InsertPlan("INSERT ...", ("a",), {}, {})
    assert only.params([{"a": 1}, {"a": 2}], strict=True) == only.params([{"a": 1}, {"a": 2}]) == [(1,), (2,)]
