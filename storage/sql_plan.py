"""Insert plans of the SQL backends: a batch's columns, its rows as driver tuples, the INSERT or upsert."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from storage.base import Row
from storage.sql_types import ColumnProcessor, Processor


@dataclasses.dataclass(frozen=True)
class InsertPlan:
    """A compiled INSERT for one set of columns and how a row becomes its parameter tuple."""

    sql: str
    names: tuple[str, ...]
    getter: Callable[[Row], tuple[Any, ...]]
    convert: Callable[[list[tuple[Any, ...]]], list[tuple[Any, ...]]] | None

    def params(
        self, rows: Sequence[Row], values: list[tuple[Any, ...]] | None = None
    ) -> list[tuple[Any, ...]]:
        """Driver parameters for `rows`; a C-level itemgetter per row, Python only where a type needs it.

        `values` are the rows' tuples in this plan's column order when the caller already made them.
        """
        names, getter, convert = self.names, self.getter, self.convert
        with gc_paused():
            if values is None:
                try:
                    values = list(map(getter, rows))    # map, not a comprehension: no Python frame per row
                except KeyError:                        # some row lacks a column: it is NULL there
                    values = [tuple(row.get(name) for name in names) for row in rows]
            return values if convert is None else convert(values)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while a batch's tuples are built: they make no cycles, yet their sheer number would set
    off full collections that walk every row the job holds (a quarter of SQLite's insert time).

    The write loops pause it for a batch's whole life, until its tuples are freed again: freed objects come
    off the collector's count, so it has no reason to walk them once it runs again (a tenth of SQLite's time
    for one large batch). Nested pauses leave the collector off until the outermost one ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A batch ready to insert: its columns, the DDL that made room for them, its tuples if already made."""

    names: tuple[str, ...]
    created: bool
    added: list[str]
    values: list[tuple[Any, ...]] | None


def tuple_converter(
    processors: dict[int, Processor], width: int, columns: dict[int, ColumnProcessor] | None = None
) -> Callable[[list[tuple[Any, ...]]], list[tuple[Any, ...]]]:
    """The rows' tuples with `processors[i]` applied to column i: `[(v[0], p1(v[1]), v[2]) for v in values]`.

    Columns are iterators (a C-level itemgetter per value, then the processor) zipped back into rows, so
    Python runs only inside the processors: a per-row loop over the processors costs more than the
    processing does. zip takes one value of each column in turn, row by row, so processors see the values
    in the order a per-row loop would and the first value to fail is the one such a loop would fail on.

    A column with a `columns[i]` converter is converted whole first, with no Python call per value; when
    that converter refuses the column (some value is not the common case), the column goes through
    `processors[i]` value by value like the others, so failures still surface in row order.
    """
    getters = [itemgetter(i) for i in range(width)]
    whole = columns or {}

    def convert(values: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        converted: list[Iterable[Any]] = []
        for i, getter in enumerate(getters):
            process = processors.get(i)
            if process is None:
                converted.append(map(getter, values))
                continue
            if (fast := whole.get(i)) is not None:
                column = list(map(getter, values))
                try:
                    converted.append(fast(column))
                    continue
                except (TypeError, ValueError, AttributeError):
                    converted.append(map(process, column))
                    continue
            converted.append(map(process, map(getter, values)))
        return list(zip(*converted, strict=True))

    return convert


def make_plan(
    sql: str, order: tuple[str, ...], *, processors: dict[int, Processor],
    columns: dict[int, ColumnProcessor] | None = None,
) -> InsertPlan:
    """The plan of the compiled INSERT `sql` whose parameters are the columns `order`, converted by index
    (`columns`: whole-column conversions, see `tuple_converter`)."""
    getter: Callable[[Row], tuple[Any, ...]]
    if len(order) == 1:
        only = order[0]
        getter = lambda row: (row[only],)  # noqa: E731 - itemgetter of one name returns no tuple
    else:
        getter = itemgetter(*order)
    convert = tuple_converter(processors, len(order), columns) if processors else None
    return InsertPlan(sql, order, getter, convert)


def batch_columns(batch: list[Row]) -> tuple[list[str], list[tuple[Any, ...]] | None]:
    """Every column named in the batch, in first-seen order, and the rows as tuples if they share keys.

    Rows that all have as many keys as the first and all of the first's keys have exactly its keys:
    `len` and an itemgetter check that in C, and the tuples it makes are the insert's parameters.
    """
    first = batch[0].keys()
    names = dict.fromkeys(first)
    width = len(names)
    if width > 1 and all(map(width.__eq__, map(len, batch))):
        try:
            with gc_paused():
                return list(names), list(map(itemgetter(*names), batch))
        except KeyError:
            pass
    last = first
    for row in batch:
        keys = row.keys()
        if keys == last:        # the common case: same keys as the row before (a C-level set compare)
            continue
        last = keys
        for name in keys:
            if name not in names:
                names[name] = None
    return list(names), None


def insert_statement(
    table: sa.Table, names: tuple[str, ...], *, dialect: str, mode: str, key: list[str] | None
) -> sa.Insert:
    """INSERT for `mode` append/replace; for upsert, the dialect's insert-or-update on `key`."""
    if mode != "upsert":
        return sa.insert(table)
    key = key or []
    others = [n for n in names if n not in key]
    if dialect == "mysql":
        statement = mysql_dialect.insert(table)
        # ON DUPLICATE KEY UPDATE needs one assignment; a key-only row "updates" its key to itself.
        updates = {n: statement.inserted[n] for n in others} or {key[0]: statement.inserted[key[0]]}
        return statement.on_duplicate_key_update(updates)
    module = pg_dialect if dialect == "postgresql" else sqlite_dialect
    statement = module.insert(table)
    index = [table.c[k] for k in key]
    if not others:
        return statement.on_conflict_do_nothing(index_elements=index)
    return statement.on_conflict_do_update(
        index_elements=index, set_={n: statement.excluded[n] for n in others}
    )
