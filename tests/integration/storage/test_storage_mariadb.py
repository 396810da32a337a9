"""The MySQL/MariaDB storage backend against the machine's MariaDB, each test in its own database."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
from collections.abc import Callable, Iterator
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


def test_append_adds_columns_and_types_none_first_columns_by_their_first_value(
    mariadb_url: str, reader: Reader, read: Any, types: Any
) -> None:
    rows = [{"id": 1, "a": "x", "late": None}, {"id": 2, "a": "y", "late": None}, {"id": 3, "late": 1.5}]
    write(mariadb_url, rows, batch_size=2)
    write(mariadb_url, [{"id": 4, "Extra": {"k": 1}}])
    found = types(reader(mariadb_url))
    assert list(found) == ["id", "a", "late", "Extra"]
    assert found["late"] == "DOUBLE"
    rows = read(reader(mariadb_url))
    assert [(r["id"], r["a"], r["late"]) for r in rows] == [
        (1, "x", None), (2, "y", None), (3, None, 1.5), (4, None, None)
    ]


def test_replace_is_atomic_for_readers(mariadb_url: str, reader: Reader) -> None:
    write(mariadb_url, [{"id": i, "gen": 1} for i in range(50)])
    engine = reader(mariadb_url)
    query = sa.text("SELECT COUNT(*), MIN(gen), MAX(gen) FROM t")
    seen: list[tuple[Any, ...]] = []
    mid_write: list[tuple[Any, ...]] = []
    done = threading.Event()

    def poll() -> None:
        with engine.connect() as conn:
            while not done.is_set():
                seen.append(tuple(conn.execute(query).one()))

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(3000):
            if i == 1500:
                with engine.connect() as conn:
                    mid_write.append(tuple(conn.execute(query).one()))
            yield {"id": 1000 + i, "gen": 2, "note": "added mid-replace" if i == 2000 else None}

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        assert write(mariadb_url, rows(), mode="replace", batch_size=100) == 3000
    finally:
        done.set()
        poller.join()
    old, new = (50, 1, 1), (3000, 2, 2)
    assert mid_write == [old]
    assert seen and set(seen) <= {old, new}, set(seen) - {old, new}
    with engine.connect() as conn:
        assert tuple(conn.execute(query).one()) == new
        # No staging or old table is left behind.
        assert sa.inspect(conn).get_table_names() == ["t"]


def test_failed_replace_leaves_the_table_as_it_was(mariadb_url: str, reader: Reader, read: Any) -> None:
    write(mariadb_url, [{"id": i, "n": i} for i in range(3)])
    rows = [{"id": 10, "n": 1}, {"id": 11, "n": 2}, {"id": 12, "n": "not a number"}]
    with pytest.raises(StorageError, match="mysql table t"):
        write(mariadb_url, rows, mode="replace", batch_size=2)
    assert read(reader(mariadb_url)) == [{"id": i, "n": i} for i in range(3)]
    with reader(mariadb_url).connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["t"]


def test_replace_creates_a_missing_table(mariadb_url: str, reader: Reader, read: Any) -> None:
    assert write(mariadb_url, [{"id": 1}], mode="replace", key=["id"]) == 1
    assert read(reader(mariadb_url)) == [{"id": 1}]


def test_upsert_inserts_and_updates(mariadb_url: str, reader: Reader, read: Any) -> None:
    key = ["site", "day"]
    first = [{"site": "a", "day": dt.date(2024, 1, 1), "clicks": 1, "cost": 2.0}]
    write(mariadb_url, first, mode="upsert", key=key)
    written = write(
        mariadb_url,
        [{"site": "a", "day": dt.date(2024, 1, 1), "clicks": 5},
         {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 7},
         {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 8}],
        mode="upsert", key=key,
    )
    assert written == 3
    assert read(reader(mariadb_url)) == [
        {"site": "a", "day": dt.date(2024, 1, 1), "clicks": 5, "cost": 2.0},
        {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 8, "cost": None},
    ]


def test_upsert_refuses_a_table_without_a_unique_key(mariadb_url: str, reader: Reader, read: Any) -> None:
    write(mariadb_url, [{"id": 1, "v": "a"}])
    with pytest.raises(StorageError, match="no primary key or unique index"):
        write(mariadb_url, [{"id": 1, "v": "b"}], mode="upsert", key=["id"])
    assert read(reader(mariadb_url)) == [{"id": 1, "v": "a"}]


def test_failed_batch_leaves_the_table_as_it_was(
    mariadb_url: str, reader: Reader, read: Any, types: Any
) -> None:
    write(mariadb_url, [{"id": 0, "n": 0}])
    rows = [{"id": 1, "n": 1}, {"id": 2, "n": 2}, {"id": 3, "n": 3, "extra": "x"}, {"id": 4, "n": "four"}]
    storage = MySQLStorage(url=mariadb_url, table="t", batch_size=2)
    reported: list[int] = []
    storage.bind(reported.append)
    try:
        with pytest.raises(StorageError) as caught:
            storage.write(rows)
    finally:
        storage.close()
    assert "mysql table t" in caught.value.message and "Incorrect integer value" in caught.value.message
    assert reported == [2]
    assert read(reader(mariadb_url)) == [{"id": 0, "n": 0}, {"id": 1, "n": 1}, {"id": 2, "n": 2}]
    assert list(types(reader(mariadb_url))) == ["id", "n"]      # the failed batch's column was undone


def test_failed_first_batch_leaves_no_table(mariadb_url: str, reader: Reader) -> None:
    with pytest.raises(StorageError):
        write(mariadb_url, [{"id": 1}, {"id": 2**70}])         # out of BIGINT's range
    with reader(mariadb_url).connect() as conn:
        assert sa.inspect(conn).get_table_names() == []


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
