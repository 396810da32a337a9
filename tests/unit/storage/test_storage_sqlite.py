"""The SQL storage backend on SQLite files: types, modes, schema evolution, failures and settings."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from collector.errors import StorageError
from collector.resources import reach
from storage import backends, open_storage
from storage.sql import MySQLStorage, PostgreSQLStorage, SQLiteStorage

UTC = dt.UTC
TYPED_ROW: dict[str, Any] = {
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
    "empty": None,
}


def read(path: Path, table: str = "t") -> list[dict[str, Any]]:
    """The table's rows (ordered by its first column), typed by SQLAlchemy's reflection of the table."""
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            query = sa.select(reflected).order_by(*list(reflected.c)[:1])
            return [dict(row._mapping) for row in conn.execute(query)]
    finally:
        engine.dispose()


def column_types(path: Path, table: str = "t") -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        found = {name: kind for _, name, kind, *_ in conn.execute(f"PRAGMA table_info({table})")}
    conn.close()
    return found


def write(path: Path, rows: Any, **settings: Any) -> int:
    storage = SQLiteStorage(path=relative(path), table=settings.pop("table", "t"), **settings)
    try:
        return storage.write(rows)
    finally:
        storage.close()


@pytest.fixture
def db(data_root: Path) -> Path:
    return data_root / "sqlite" / "collected.sqlite"


def relative(path: Path) -> str:
    """`path` as a spec names it: relative to the data root."""
    return os.path.relpath(path, reach.current().data_root.path)


def test_every_type_round_trips(db: Path) -> None:
    assert write(db, [TYPED_ROW]) == 1
    (row,) = read(db)
    assert row["id"] == 1 and row["big"] == 2**62
    assert row["ratio"] == 0.1 + 0.2
    assert decimal.Decimal(row["price"]) == TYPED_ROW["price"]    # kept exact, as text
    assert row["flag"] is True
    assert row["day"] == dt.date(2024, 2, 29)
    assert row["moment"] == dt.datetime(2024, 5, 31, 23, 59, 58, 123456)
    assert row["aware"] == dt.datetime(2024, 5, 31, 10, 0)         # stored as UTC
    assert row["name"] == TYPED_ROW["name"]
    assert row["meta"] == TYPED_ROW["meta"] and row["tags"] == ["x", "y"]
    # A column that only ever held None still exists, so the table shows every column of the rows.
    assert row["empty"] is None


def test_column_types_are_inferred(db: Path) -> None:
    write(db, [TYPED_ROW])
    assert column_types(db) == {
        "id": "BIGINT", "big": "BIGINT", "ratio": "DOUBLE", "price": "TEXT", "flag": "BOOLEAN",
        "day": "DATE", "moment": "DATETIME", "aware": "DATETIME", "name": "TEXT", "meta": "JSON",
        "tags": "JSON", "empty": "TEXT",
    }


def test_mixed_values_widen_and_none_first_columns_take_the_first_value_type(db: Path) -> None:
    rows = [
        {"id": 1, "n": 1, "late": None, "when": dt.date(2024, 1, 1)},
        {"id": 2, "n": 2.5, "late": None, "when": dt.datetime(2024, 1, 2, 3, 4)},
        {"id": 3, "n": 3, "late": 7, "when": None},
    ]
    write(db, rows, batch_size=2)
    types = column_types(db)
    assert types["n"] == "DOUBLE" and types["when"] == "DATETIME"
    assert types["late"] == "BIGINT"        # not TEXT: its first two values were None
    assert [r["late"] for r in read(db)] == [None, None, 7]
    assert [r["n"] for r in read(db)] == [1.0, 2.5, 3.0]


def test_a_datetime_column_takes_none_aware_datetimes_and_dates_in_later_batches(db: Path) -> None:
    first = dt.datetime(2024, 1, 2, 3, 4, 5)
    later = [
        None,
        dt.datetime(2024, 1, 2, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.date(2024, 1, 3),
        dt.datetime(2024, 1, 4, 0, 0, 0, 7),
    ]
    rows = [{"id": i, "when": when} for i, when in enumerate([first, *later])]
    write(db, rows, batch_size=2)     # the first batch types the column as naive
    assert column_types(db)["when"] == "DATETIME"
    assert [r["when"] for r in read(db)] == [
        first, None, dt.datetime(2024, 1, 2, 10, 0), dt.datetime(2024, 1, 3), dt.datetime(2024, 1, 4, 0, 0, 0, 7)
    ]


def test_append_adds_rows_and_reports_each_batch(db: Path) -> None:
    storage = SQLiteStorage(path=relative(db), table="t", batch_size=2)
    reported: list[int] = []
    storage.bind(reported.append)
    try:
        assert storage.write({"id": i} for i in range(5)) == 5
        assert storage.write([{"id": 5}]) == 1
    finally:
        storage.close()
    assert reported == [2, 2, 1, 1]
    assert storage.rows_written == 6
    assert [r["id"] for r in read(db)] == list(range(6))


def test_new_columns_are_added_and_never_dropped(db: Path) -> None:
    write(db, [{"id": 1, "a": "x"}])
    write(db, [{"id": 2, "a": "y"}, {"id": 3, "b": 3.5}])       # b is new; row 3 has no a
    write(db, [{"id": 4, "c": {"k": 1}}])
    assert list(column_types(db)) == ["id", "a", "b", "c"]
    assert read(db) == [
        {"id": 1, "a": "x", "b": None, "c": None},
        {"id": 2, "a": "y", "b": None, "c": None},
        {"id": 3, "a": None, "b": 3.5, "c": None},
        {"id": 4, "a": None, "b": None, "c": {"k": 1}},
    ]


def test_column_names_match_case_insensitively_like_sqlite(db: Path) -> None:
    write(db, [{"Name": "a"}])
    write(db, [{"name": "b"}])      # SQLite's columns are case-insensitive: same column, no ALTER
    assert list(column_types(db)) == ["Name"]
    assert sorted(r["Name"] for r in read(db)) == ["a", "b"]


def test_replace_swaps_all_rows_and_keeps_columns(db: Path) -> None:
    write(db, [{"id": i, "old": "o"} for i in range(3)])
    assert write(db, [{"id": 10, "new": 1.5}, {"id": 11, "new": 2.5}], mode="replace") == 2
    assert read(db) == [{"id": 10, "old": None, "new": 1.5}, {"id": 11, "old": None, "new": 2.5}]


def test_replace_is_invisible_to_readers_until_it_commits(db: Path) -> None:
    write(db, [{"id": i, "gen": 1} for i in range(3)])
    seen: list[list[tuple[int, int]]] = []

    def snapshot() -> list[tuple[int, int]]:
        with sqlite3.connect(db, timeout=0.1) as reader:
            result = reader.execute("SELECT id, gen FROM t ORDER BY id").fetchall()
        reader.close()
        return result

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(6):
            if i in (2, 4):              # batches of 2 are already inserted by now, uncommitted
                seen.append(snapshot())
            yield {"id": 100 + i, "gen": 2, "extra": "new column mid-replace" if i == 3 else None}

    assert write(db, rows(), mode="replace", batch_size=2) == 6
    assert seen == [[(0, 1), (1, 1), (2, 1)]] * 2
    assert snapshot() == [(100 + i, 2) for i in range(6)]


def test_replace_with_no_rows_empties_the_table(db: Path) -> None:
    write(db, [{"id": 1}])
    assert write(db, [], mode="replace") == 0
    assert read(db) == []


def test_later_writes_of_a_replacing_storage_append(db: Path) -> None:
    write(db, [{"id": 0}])
    storage = SQLiteStorage(path=relative(db), table="t", mode="replace")
    try:
        storage.write([{"id": 1}])
        storage.write([{"id": 2}])
    finally:
        storage.close()
    assert [r["id"] for r in read(db)] == [1, 2]


def test_failed_replace_leaves_the_table_as_it_was(db: Path) -> None:
    write(db, [{"id": i, "name": "old"} for i in range(3)])
    rows = [{"id": 10, "name": "new"}, {"id": 11, "name": "new", "added": 1}, {"id": 12, "name": object()}]
    with pytest.raises(StorageError, match="sqlite table t"):
        write(db, rows, mode="replace", batch_size=2)
    assert read(db) == [{"id": i, "name": "old"} for i in range(3)]
    assert list(column_types(db)) == ["id", "name"]     # the column added mid-replace was rolled back


def test_rows_failing_mid_replace_leave_the_table_and_raise_their_own_error(db: Path) -> None:
    write(db, [{"id": 1}])

    def rows() -> Iterator[dict[str, Any]]:
        yield {"id": 2}
        yield {"id": 3}
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        write(db, rows(), mode="replace", batch_size=1)
    assert read(db) == [{"id": 1}]


def test_upsert_inserts_and_updates_by_key(db: Path) -> None:
    write(db, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], mode="upsert", key=["id"])
    written = write(
        db, [{"id": 2, "v": "B"}, {"id": 3, "v": "c"}, {"id": 3, "v": "C"}], mode="upsert", key=["id"]
    )
    assert written == 3
    assert read(db) == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "C"}]


def test_upsert_on_a_composite_key_updates_only_given_columns(db: Path) -> None:
    key = ["site", "day"]
    write(db, [{"site": "x", "day": dt.date(2024, 1, 1), "clicks": 1, "cost": 2.0}], mode="upsert", key=key)
    write(db, [{"site": "x", "day": dt.date(2024, 1, 1), "clicks": 5}], mode="upsert", key=key)
    assert read(db) == [{"site": "x", "day": dt.date(2024, 1, 1), "clicks": 5, "cost": 2.0}]


def test_upsert_needs_a_unique_key_on_an_existing_table(db: Path) -> None:
    write(db, [{"id": 1, "v": "a"}])                # created without a key
    with pytest.raises(StorageError, match=r"no primary key or unique index on exactly \(id\)"):
        write(db, [{"id": 1, "v": "b"}], mode="upsert", key=["id"])
    assert read(db) == [{"id": 1, "v": "a"}]


def test_upsert_rows_need_their_key(db: Path) -> None:
    with pytest.raises(StorageError, match="no value for key column"):
        write(db, [{"v": "a"}], mode="upsert", key=["id"])


def test_failed_batch_rolls_back_and_leaves_earlier_batches(db: Path) -> None:
    write(db, [{"id": 0, "name": "base"}])
    rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c", "extra": 1.5},
            {"id": 4, "name": object()}]
    storage = SQLiteStorage(path=relative(db), table="t", batch_size=2)
    reported: list[int] = []
    storage.bind(reported.append)
    try:
        with pytest.raises(StorageError) as caught:
            storage.write(rows)
    finally:
        storage.close()
    assert "sqlite table t" in caught.value.message and "from row 3" in caught.value.message
    assert reported == [2]
    assert read(db) == [{"id": 0, "name": "base"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    assert "extra" not in column_types(db)          # the failed batch's new column went with it


def test_duplicate_key_in_append_mode_fails_the_batch(db: Path) -> None:
    write(db, [{"id": 1}], key=["id"])
    with pytest.raises(StorageError, match="UNIQUE constraint failed"):
        write(db, [{"id": 2}, {"id": 1}], key=["id"])
    assert read(db) == [{"id": 1}]


def test_rows_may_be_any_mapping_with_ragged_keys(db: Path) -> None:
    from types import MappingProxyType

    write(db, [MappingProxyType({"id": 1, "a": 1}), MappingProxyType({"id": 2}), {"a": 3, "id": 3}])
    assert read(db) == [{"id": 1, "a": 1}, {"id": 2, "a": None}, {"id": 3, "a": 3}]


def test_rows_with_as_many_keys_but_other_ones_keep_every_value(db: Path) -> None:
    write(db, [{"id": 1, "a": 1}, {"id": 2, "b": "x"}, {"b": "y", "id": 3}])
    assert read(db) == [
        {"id": 1, "a": 1, "b": None}, {"id": 2, "a": None, "b": "x"}, {"id": 3, "a": None, "b": "y"}
    ]
    # The first row's other column has no value yet (so it is not in the insert) and is missing later.
    write(db, [{"id": 4, "c": None}, {"id": 5, "d": 7}], table="u")
    assert read(db, "u") == [{"id": 4, "c": None, "d": None}, {"id": 5, "c": None, "d": 7}]


def test_odd_table_and_column_names_are_quoted(db: Path) -> None:
    write(db, [{"my col": 1, "pct%": 2, "b(1)": 3, "select": 4}], table="odd table; drop")
    assert read(db, "odd table; drop") == [{"my col": 1, "pct%": 2, "b(1)": 3, "select": 4}]


# -- settings, registry and error messages


def test_backends_are_registered_by_type() -> None:
    found = backends()
    assert found["mysql"] is MySQLStorage and found["postgresql"] is PostgreSQLStorage
    assert found["sqlite"] is SQLiteStorage
    spec = {"type": "mysql", "settings": {"hostname": "localhost", "db": "selpy_legacy",
                                          "username": "iamauser", "password": "iamapassword",
                                          "table": "mac_publishers"}}
    storage = open_storage(spec)
    assert storage.describe() == "mysql table mac_publishers"
    assert "iamapassword" not in repr(vars(storage))


def test_settings_schema_marks_passwords_secret() -> None:
    schema = pytest.importorskip("collector.specs.schema")
    for cls in (MySQLStorage, PostgreSQLStorage, SQLiteStorage):
        built = schema.build_settings_schema(cls, where=cls.TYPE)
        assert {s.name for s in built.settings if s.required} == {"table"}
    mysql_schema = schema.build_settings_schema(MySQLStorage, where="mysql")
    assert set(mysql_schema.secret_names()) == {"password", "url"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"table": "t"}, "give a connection, a url, or hostname, db and username"),
        ({"table": "t", "hostname": "h", "db": "d"}, "missing: username"),
        ({"table": "t", "url": "postgresql://u:pw@h/d"}, "must be a mysql or mariadb URL"),
        ({"table": "t", "url": "not a url"}, "not a SQLAlchemy database URL"),
        ({"table": "t", "url": "mysql://u@h/d", "mode": "upsert"}, "needs key"),
        ({"table": "t", "url": "mysql://u@h/d", "mode": "merge"}, "mode must be one of"),
        ({"table": "t", "url": "mysql://u@h/d", "batch_size": 0}, "batch_size must be at least 1"),
        ({"table": "", "url": "mysql://u@h/d"}, "table must name"),
    ],
)
def test_bad_settings_raise_value_error(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MySQLStorage(**settings)


def test_url_parse_error_hides_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        MySQLStorage(table="t", url="mysql://user:hunter2@host:notaport/db")
    assert "hunter2" not in str(caught.value)


def test_url_gets_the_driver_and_connection_errors_hide_the_password(allow_loopback: None) -> None:
    # Port 1 on localhost refuses at once: a connection error without needing a server.
    for storage in (
        MySQLStorage(table="mac_publishers", hostname="127.0.0.1", port=1, db="d", username="u",
                     password="hunter2-secret"),
        MySQLStorage(table="mac_publishers", url="mariadb://u:hunter2-secret@127.0.0.1:1/d"),
        PostgreSQLStorage(table="mac_publishers", url="postgresql://u:hunter2-secret@127.0.0.1:1/d"),
    ):
        try:
            with pytest.raises(StorageError) as caught:
                storage.write([{"id": 1}])
        finally:
            storage.close()
        text = str(caught.value) + repr(caught.value) + repr(vars(storage))
        assert f"{storage.TYPE} table mac_publishers" in caught.value.message
        assert "hunter2" not in text
        assert storage._url.drivername.endswith(("+pymysql", "+psycopg"))


def test_messages_mask_the_password_even_when_a_failure_echoes_it(db: Path) -> None:
    class Leaky:
        def __str__(self) -> str:
            raise ValueError("cannot show hunter2-secret")

    storage = SQLiteStorage(path=relative(db), table="t")
    storage._secrets = lambda: ["hunter2-secret"]       # type: ignore[method-assign]
    try:
        with pytest.raises(StorageError) as caught:
            storage.write([{"id": 1, "meta": {"x": Leaky()}}])      # fails serializing the JSON value
    finally:
        storage.close()
    assert "cannot show ***" in caught.value.message
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None        # the unmasked cause is not chained
