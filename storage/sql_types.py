"""Column types of the SQL backends: a value's kind, its SQL type on each dialect, the conversions it needs."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect

Processor = Callable[[Any], Any]
# A whole column's values at once, in C, when they are all the common case; raises for any other value,
# and then the column goes value by value through its `Processor` instead.
ColumnProcessor = Callable[[list[Any]], list[Any]]


def json_default(value: Any) -> Any:
    """What `json.dumps` writes for values JSON has no type for: ISO dates, exact decimals, text."""
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


dump_json = functools.partial(json.dumps, default=json_default, ensure_ascii=False)

# The kind of a Python value, by exact type first (a dict lookup is the cheapest test there is).
_KINDS: dict[type, str] = {
    bool: "bool", int: "int", float: "float", decimal.Decimal: "decimal", str: "str",
    dict: "json", list: "json", dt.date: "date", dt.time: "time", bytes: "bytes", bytearray: "bytes",
}


def value_kind(value: Any) -> str:
    """`int`, `float`, `datetime_tz`, `json`, ... for one non-None value; `other` for anything else."""
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, dt.datetime):
        return "datetime_tz" if value.tzinfo is not None else "datetime"
    for cls, name in _KINDS.items():       # subclasses: str enums, OrderedDict, date subclasses
        if isinstance(value, cls):
            return name
    if isinstance(value, tuple):
        return "json"
    return "other"


def widen(kinds: set[str]) -> str:
    """One column kind that holds every kind seen: int+float is float, date+datetime is datetime, ..."""
    if len(kinds) == 1:
        return next(iter(kinds))
    for family in (
        {"bool", "int"}, {"bool", "int", "float"}, {"bool", "int", "float", "decimal"},
        {"date", "datetime"}, {"date", "datetime", "datetime_tz"},
    ):
        if kinds <= family:
            ordered = ["bool", "int", "float", "decimal", "date", "datetime", "datetime_tz"]
            return max(kinds, key=ordered.index)
    return "mixed"                          # stored as text; see `to_text`


def to_text(value: Any) -> Any:
    """A value for a text column that also saw non-text values: JSON for containers, ISO for dates."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        return dump_json(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def to_utc_naive(value: Any) -> Any:
    """An aware datetime as naive UTC, for databases whose DATETIME has no time zone (MySQL, SQLite)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def to_str(value: Any) -> Any:
    return None if value is None else str(value)


# SQLite keeps dates as text. These write exactly the text SQLAlchemy's own SQLite types write (and parse
# back), with C-level isoformat instead of their %-formatting, which cost a third of the insert time.
def sqlite_datetime(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")
    if isinstance(value, dt.date):
        return f"{value.isoformat()} 00:00:00.000000"
    return value


_tzinfo = attrgetter("tzinfo")
_datetime_isoformat = dt.datetime.isoformat


def sqlite_datetimes(values: list[Any]) -> list[Any]:
    """`sqlite_datetime` of a column of naive datetimes without a Python call per value (a tenth of the
    insert time); any other value (None, an aware datetime, a date, text) raises, for the per-value path."""
    if any(map(_tzinfo, values)):
        raise ValueError("aware datetimes are converted to UTC value by value")
    return list(map(_datetime_isoformat, values, repeat(" "), repeat("microseconds")))


def sqlite_date(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def sqlite_time(value: Any) -> Any:
    return value.replace(tzinfo=None).isoformat("microseconds") if isinstance(value, dt.time) else value


def decimal_scale(values: Iterable[Any]) -> int:
    """The most digits after the point among sampled decimals (MySQL's DECIMAL needs a fixed scale)."""
    scale = 0
    for value in values:
        if isinstance(value, decimal.Decimal) and value.is_finite():
            exponent = value.as_tuple().exponent
            if isinstance(exponent, int):
                scale = max(scale, -exponent)
    return min(scale, 30)


@dataclasses.dataclass(frozen=True)
class ColumnType:
    """A column's SQL type and what a value goes through before the driver sees it."""

    type: sa.types.TypeEngine[Any]
    process: Processor | None
    column: ColumnProcessor | None = None       # the same conversion for a whole column, where it pays


def column_type(kind: str, *, dialect: sa.engine.Dialect, key: bool, values: Sequence[Any]) -> ColumnType:
    """The SQL type for a column of `kind` on `dialect`, plus the per-value conversion it needs."""
    name = dialect.name
    pre: Processor | None = None
    column: ColumnProcessor | None = None
    sql_type: sa.types.TypeEngine[Any]
    if kind == "bool":
        sql_type = sa.Boolean()
    elif kind == "int":
        sql_type = sa.BigInteger()
    elif kind == "float":
        sql_type = sa.Double()                  # FLOAT is single precision on MySQL
    elif kind == "decimal":
        if name == "sqlite":
            # SQLite has no exact decimal: NUMERIC affinity would turn 0.1 into a float. Text keeps it exact.
            sql_type, pre = sa.Text(), to_str
        elif name == "mysql":
            scale = decimal_scale(values)       # a bare DECIMAL on MySQL is DECIMAL(10,0): no fractions
            sql_type = sa.Numeric(65, scale)
        else:
            sql_type = sa.Numeric()
    elif kind == "date":
        sql_type = sa.Date()
    elif kind in ("datetime", "datetime_tz"):
        aware = kind == "datetime_tz"
        # MySQL's DATETIME drops microseconds unless given a fractional-seconds precision.
        if name == "mysql":
            sql_type = mysql_dialect.DATETIME(fsp=6)
        else:
            sql_type = sa.DateTime(timezone=aware and name == "postgresql")
        if aware and name != "postgresql":
            pre = to_utc_naive                  # stored as UTC: these DATETIMEs cannot keep an offset
    elif kind == "time":
        sql_type = mysql_dialect.TIME(fsp=6) if name == "mysql" else sa.Time()
    elif kind == "json":
        sql_type = pg_dialect.JSONB(none_as_null=True) if name == "postgresql" else sa.JSON(none_as_null=True)
    elif kind == "bytes":
        sql_type = mysql_dialect.LONGBLOB() if name == "mysql" else sa.LargeBinary()
    else:                                       # str, and "mixed"/"other" stored as their text
        if name == "mysql":
            # An index on TEXT needs a prefix length, so key columns are VARCHAR; MEDIUMTEXT fits 16 MB.
            sql_type = sa.String(255) if key else mysql_dialect.MEDIUMTEXT()
        else:
            sql_type = sa.Text()
        if kind != "str":
            pre = to_text
    if kind == "bool":
        after = None                    # every driver here binds Python bools natively
    elif name == "sqlite" and kind in ("date", "datetime", "datetime_tz", "time"):
        pre, after = None, {"date": sqlite_date, "time": sqlite_time}.get(kind, sqlite_datetime)
        column = sqlite_datetimes if kind == "datetime" else None
    else:
        after = sql_type.dialect_impl(dialect).bind_processor(dialect)
    return ColumnType(sql_type, chain(pre, after), column)


def quoted(name: str) -> sa.sql.quoted_name:
    return sa.sql.quoted_name(name, quote=True)


def chain(first: Processor | None, second: Processor | None) -> Processor | None:
    if first is None or second is None:
        return first or second
    return lambda value: second(first(value))
