"""Insert plans of the SQL backends: how rows become the driver's parameter tuples."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from storage.sql_plan import batch_columns, make_plan, tuple_converter
from storage.sql_types import sqlite_datetime, sqlite_datetimes


def test_converter_applies_processors_by_column_and_leaves_the_others() -> None:
    convert = tuple_converter({1: str, 3: abs}, 4)
    assert convert([(1, 2, 3, -4), (5, 6, 7, -8)]) == [(1, "2", 3, 4), (5, "6", 7, 8)]
    assert convert([]) == []


def test_converter_of_one_column_makes_one_tuples() -> None:
    assert tuple_converter({0: str}, 1)([(1,), (2,)]) == [("1",), ("2",)]


def test_converter_calls_processors_row_by_row() -> None:
    seen: list[tuple[str, Any]] = []

    def note(tag: str) -> Any:
        def process(value: Any) -> Any:
            seen.append((tag, value))
            if value == "bad":
                raise ValueError(f"{tag} cannot take {value}")
            return value

        return process

    convert = tuple_converter({0: note("a"), 2: note("c")}, 3)
    convert([(1, 0, 2), (3, 0, 4)])
    assert seen == [("a", 1), ("c", 2), ("a", 3), ("c", 4)]
    # The error raised is that of the first failing value row by row (column by column would fail on a).
    with pytest.raises(ValueError, match="c cannot take bad"):
        convert([(1, 0, 2), (5, 0, "bad"), ("bad", 0, 6)])


def test_whole_column_converter_replaces_the_per_value_processor_when_it_takes_the_column() -> None:
    calls: list[Any] = []

    def per_value(value: Any) -> Any:
        calls.append(value)
        return f"one {value}"

    def whole(column: list[Any]) -> list[Any]:
        if any(not isinstance(v, int) for v in column):
            raise TypeError("not all ints")
        return [f"all {v}" for v in column]

    convert = tuple_converter({1: per_value}, 2, {1: whole})
    assert convert([(0, 1), (0, 2)]) == [(0, "all 1"), (0, "all 2")]
    assert calls == []
    # One refused value sends the whole column value by value, in row order, errors included.
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


def test_batch_columns_make_tuples_only_when_every_row_has_the_same_keys() -> None:
    assert batch_columns([{"a": 1, "b": 2}, {"b": 4, "a": 3}]) == (["a", "b"], [(1, 2), (3, 4)])
    assert batch_columns([{"a": 1, "b": 2}, {"a": 3, "c": 4}]) == (["a", "b", "c"], None)
    assert batch_columns([{"a": 1}, {"a": 2, "b": 3}]) == (["a", "b"], None)


def test_plan_params_follow_the_plan_order_and_fill_missing_columns_with_none() -> None:
    plan = make_plan("INSERT ...", ("b", "a"), processors={1: str})
    assert plan.params([{"a": 1, "b": 2}, {"b": 3}]) == [(2, "1"), (3, "None")]
    assert plan.params([{"a": 1, "b": 2}]) == [(2, "1")]
    only = make_plan("INSERT ...", ("a",), processors={})
    assert only.params([{"a": 1}, {"a": 2}]) == [(1,), (2,)]
