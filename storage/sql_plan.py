"""Insert plans of the SQL backends: a batch's columns, its rows as driver tuples, the INSERT or upsert."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter, methodcaller
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from storage.base import Row
from storage.sql_types import ColumnProcessor, Processor


@dataclasses.dataclass(frozen=True)
class InsertPlan:
    """A compiled INSERT for one set of columns and how rows become its parameter tuples."""

    sql: str
    names: tuple[str, ...]
    processors: dict[int, Processor]            # by position in `names`: per-value conversions
    columns: dict[int, ColumnProcessor]         # whole-column forms of some of them (see `rows_to_tuples`)

    def params(self, rows: Sequence[Row], *, strict: bool = False) -> list[tuple[Any, ...]]:
        """Driver parameters for `rows`: C-level getters per column, Python only where a type needs it.

        strict: every row has every column, or KeyError (how `_prepare` proves rows share their keys);
        otherwise a column a row lacks is NULL there.
        """
        names = self.names
        with gc_paused():
            if strict and not self.processors and len(names) > 1:
                return list(map(itemgetter(*names), rows))  # map, not a comprehension: no frame per row
            getters = [itemgetter(n) if strict else methodcaller("get", n) for n in names]
            return rows_to_tuples(rows, getters, self.processors, self.columns)


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
    """A batch ready to insert: its columns, the DDL that made room for them, its parameters if made."""

    names: tuple[str, ...]
    created: bool
    added: list[str]
    params: list[tuple[Any, ...]] | None


def rows_to_tuples(
    rows: Sequence[Row], getters: list[Callable[[Row], Any]], processors: dict[int, Processor],
    columns: dict[int, ColumnProcessor] | None = None,
) -> list[tuple[Any, ...]]:
    """One tuple per row of `getters[i](row)`, passed through `processors[i]` where there is one.

    Columns are iterators (a C-level getter per value, then the processor) zipped into rows, so Python runs
    only inside the processors: a per-row loop over the processors costs more than the processing does.
    zip takes one value of each column in turn, row by row, so processors see the values in the order a
    per-row loop would and the first value to fail is the one such a loop would fail on.

    A column with a `columns[i]` converter is converted whole first, with no Python call per value; when
    that converter refuses the column (some value is not the common case), the column goes through
    `processors[i]` value by value like the others, so failures still surface in row order.
    """
    whole = columns or {}
    converted: list[Iterable[Any]] = []
    for i, get in enumerate(getters):
        process = processors.get(i)
        if process is None:
            converted.append(map(get, rows))
        elif (fast := whole.get(i)) is None:
            converted.append(map(process, map(get, rows)))
        else:
            column = list(map(get, rows))
            try:
                converted.append(fast(column))
            except (TypeError, ValueError, AttributeError):
                converted.append(map(process, column))
    return list(zip(*converted, strict=True))


def same_width(batch: list[Row]) -> bool:
    """Every row has as many keys as the first (checked in C). Then rows that also have each of the first
    row's keys have exactly its keys: `InsertPlan.params(strict=True)` finds out while making the tuples."""
    width = len(batch[0])
    return all(map(width.__eq__, map(len, batch)))


def batch_columns(batch: list[Row]) -> list[str]:
    """Every column named in the batch, in first-seen order."""
    first = batch[0].keys()
    names = dict.fromkeys(first)
    last = first
    for row in batch:
        keys = row.keys()
        if keys == last:        # the common case: same keys as the row before (a C-level set compare)
            continue
        last = keys
        for name in keys:
            if name not in names:
                names[name] = None
    return list(names)


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
