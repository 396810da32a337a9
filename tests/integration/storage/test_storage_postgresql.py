"""The PostgreSQL storage backend against the machine's PostgreSQL, each test in its own database."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
from collections.abc import Callable, Iterator
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


def test_append_adds_columns_and_types_none_first_columns_by_their_first_value(
    postgres_url: str, reader: Reader, read: Any, types: Any
) -> None:
    rows = [{"id": 1, "a": "x", "late": None}, {"id": 2, "a": "y", "late": None}, {"id": 3, "late": 1.5}]
    write(postgres_url, rows, batch_size=2)
    write(postgres_url, [{"id": 4, "Extra": {"k": 1}}])
    found = types(reader(postgres_url))
    assert list(found) == ["id", "a", "late", "Extra"]
    assert found["late"] == "DOUBLE PRECISION"
    rows = read(reader(postgres_url))
    assert [(r["id"], r["a"], r["late"]) for r in rows] == [
        (1, "x", None), (2, "y", None), (3, None, 1.5), (4, None, None)
    ]


def test_replace_is_atomic_for_readers(postgres_url: str, reader: Reader) -> None:
    write(postgres_url, [{"id": i, "gen": 1} for i in range(50)])
    engine = reader(postgres_url)
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
        assert write(postgres_url, rows(), mode="replace", batch_size=100) == 3000
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


def test_failed_replace_leaves_the_table_as_it_was(postgres_url: str, reader: Reader, read: Any) -> None:
    write(postgres_url, [{"id": i, "n": i} for i in range(3)])
    rows = [{"id": 10, "n": 1}, {"id": 11, "n": 2}, {"id": 12, "n": "not a number"}]
    with pytest.raises(StorageError, match="postgresql table t"):
        write(postgres_url, rows, mode="replace", batch_size=2)
    assert read(reader(postgres_url)) == [{"id": i, "n": i} for i in range(3)]
    with reader(postgres_url).connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["t"]


def test_replace_creates_a_missing_table(postgres_url: str, reader: Reader, read: Any) -> None:
    assert write(postgres_url, [{"id": 1}], mode="replace", key=["id"]) == 1
    assert read(reader(postgres_url)) == [{"id": 1}]


def test_upsert_inserts_and_updates(postgres_url: str, reader: Reader, read: Any) -> None:
    key = ["site", "day"]
    first = [{"site": "a", "day": dt.date(2024, 1, 1), "clicks": 1, "cost": 2.0}]
    write(postgres_url, first, mode="upsert", key=key)
    written = write(
        postgres_url,
        [{"site": "a", "day": dt.date(2024, 1, 1), "clicks": 5},
         {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 7},
         {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 8}],
        mode="upsert", key=key,
    )
    assert written == 3
    assert read(reader(postgres_url)) == [
        {"site": "a", "day": dt.date(2024, 1, 1), "clicks": 5, "cost": 2.0},
        {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 8, "cost": None},
    ]


def test_upsert_refuses_a_table_without_a_unique_key(postgres_url: str, reader: Reader, read: Any) -> None:
    write(postgres_url, [{"id": 1, "v": "a"}])
    with pytest.raises(StorageError, match="no primary key or unique index"):
        write(postgres_url, [{"id": 1, "v": "b"}], mode="upsert", key=["id"])
    assert read(reader(postgres_url)) == [{"id": 1, "v": "a"}]


def test_failed_batch_leaves_the_table_as_it_was(
    postgres_url: str, reader: Reader, read: Any, types: Any
) -> None:
    write(postgres_url, [{"id": 0, "n": 0}])
    rows = [{"id": 1, "n": 1}, {"id": 2, "n": 2}, {"id": 3, "n": 3, "extra": "x"}, {"id": 4, "n": "four"}]
    storage = PostgreSQLStorage(url=postgres_url, table="t", batch_size=2)
    reported: list[int] = []
    storage.bind(reported.append)
    try:
        with pytest.raises(StorageError) as caught:
            storage.write(rows)
    finally:
        storage.close()
    assert "postgresql table t" in caught.value.message and "invalid input syntax" in caught.value.message
    assert reported == [2]
    assert read(reader(postgres_url)) == [{"id": 0, "n": 0}, {"id": 1, "n": 1}, {"id": 2, "n": 2}]
    assert list(types(reader(postgres_url))) == ["id", "n"]      # the failed batch's column rolled back


def test_failed_first_batch_leaves_no_table(postgres_url: str, reader: Reader) -> None:
    with pytest.raises(StorageError):
        write(postgres_url, [{"id": 1}, {"id": 2**70}])         # out of BIGINT's range
    with reader(postgres_url).connect() as conn:
        assert sa.inspect(conn).get_table_names() == []


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
