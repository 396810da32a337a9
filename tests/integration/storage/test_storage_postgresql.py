"""The PostgreSQL storage backend against the machine's PostgreSQL, each test in its own database."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from collector.errors import StorageError
from storage.sql import PostgreSQLStorage

Reader = Callable[[str], sa.Engine]
ROW: dict[str, Any] = {
    "id": 1,
    "big": 2**62,
    "ratio": 0.1 + 0.2,
    "price": decimal.Decimal("12345678901234.123456789012"),
    "flag": True,
    "day": dt.date(2024, 2, 29),
    "moment": dt.datetime(2024, 5, 31, 23, 59, 58, 123456),
    "aware": dt.datetime(2024, 5, 31, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "name": "Zoë 🚀 ' \" ;",
    "meta": {"a": [1, 2, {"b": None}], "c": "d"},
    "tags": ["x", "y"],
}


def write(url: str, rows: Any, **settings: Any) -> int:
    storage = PostgreSQLStorage(url=url, table=settings.pop("table", "t"), **settings)
    try:
        return storage.write(rows)
    finally:
        storage.close()


def test_every_type_round_trips(postgres_url: str, reader: Reader, read: Any, types: Any) -> None:
    assert write(postgres_url, [ROW]) == 1
    (row,) = read(reader(postgres_url))
    assert row == {**ROW, "ratio": row["ratio"]}                  # native types: all equal, aware kept aware
    assert row["aware"].utcoffset() is not None
    with reader(postgres_url).connect() as conn:
        assert conn.execute(sa.text("SELECT ratio FROM t")).scalar() == 0.1 + 0.2
    found = types(reader(postgres_url))
    assert found["id"] == "BIGINT" and found["ratio"] == "DOUBLE PRECISION" and found["price"] == "NUMERIC"
    assert found["aware"] == "TIMESTAMP" and found["meta"] == "JSONB" and found["name"] == "TEXT"


def test_errors_never_show_the_password(postgres_url: str) -> None:
    # Trust authentication accepts any password, so the write reaches the database; the failing value is
    # the password itself, which PostgreSQL echoes in its message: it must come out masked.
    url = sa.make_url(postgres_url).set(password="hunter2-secret")
    storage = PostgreSQLStorage(url=url.render_as_string(hide_password=False), table="mac_publishers")
    try:
        storage.write([{"id": 1}])
        with pytest.raises(StorageError) as caught:
            storage.write([{"id": "hunter2-secret"}])
    finally:
        storage.close()
    assert "postgresql table mac_publishers" in caught.value.message
    assert 'invalid input syntax for type bigint: "***"' in caught.value.message
    assert "hunter2" not in str(caught.value) and caught.value.__cause__ is None


def test_missing_database_error_names_the_table_not_the_password(postgres_url: str) -> None:
    url = sa.make_url(postgres_url).set(password="hunter2-secret", database="collector_no_such_db")
    storage = PostgreSQLStorage(url=url.render_as_string(hide_password=False), table="mac_publishers")
    try:
        with pytest.raises(StorageError) as caught:
            storage.write([{"id": 1}])
    finally:
        storage.close()
    assert "postgresql table mac_publishers (connecting)" in caught.value.message
    assert "hunter2" not in str(caught.value)
