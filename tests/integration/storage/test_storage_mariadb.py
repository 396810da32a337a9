"""The MySQL/MariaDB storage backend against the machine's MariaDB, each test in its own database."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from collector.errors import StorageError
from storage.sql import MySQLStorage

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
    storage = MySQLStorage(url=url, table=settings.pop("table", "t"), **settings)
    try:
        return storage.write(rows)
    finally:
        storage.close()


def test_every_type_round_trips(mariadb_url: str, reader: Reader, read: Any, types: Any) -> None:
    assert write(mariadb_url, [ROW]) == 1
    (row,) = read(reader(mariadb_url))
    assert row["id"] == 1 and row["big"] == 2**62
    with reader(mariadb_url).connect() as conn:     # reflected DOUBLE reads back as a 10-digit Decimal
        assert conn.execute(sa.text("SELECT ratio FROM t")).scalar() == 0.1 + 0.2
    assert row["price"] == ROW["price"]                           # exact: DECIMAL(65, 12)
    assert row["flag"] == 1                                       # BOOL is TINYINT(1) in MariaDB
    assert row["day"] == ROW["day"] and row["moment"] == ROW["moment"]
    assert row["aware"] == dt.datetime(2024, 5, 31, 10, 0)        # stored as UTC
    assert row["name"] == ROW["name"]                             # utf8mb4: the emoji survives
    assert json.loads(row["meta"]) == ROW["meta"] and json.loads(row["tags"]) == ["x", "y"]
    found = types(reader(mariadb_url))
    assert found["id"] == "BIGINT" and found["ratio"] == "DOUBLE" and found["price"] == "DECIMAL(65, 12)"
    assert found["moment"].startswith("DATETIME") and found["name"] == "MEDIUMTEXT"


def test_errors_never_show_the_password(mariadb_url: str) -> None:
    url = sa.make_url(mariadb_url).set(password="hunter2-secret")
    storage = MySQLStorage(url=url.render_as_string(hide_password=False), table="mac_publishers")
    try:
        with pytest.raises(StorageError) as caught:
            storage.write([{"id": 1}])
    finally:
        storage.close()
    assert "mysql table mac_publishers" in caught.value.message
    assert "Access denied" in caught.value.message
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value.__cause__)
