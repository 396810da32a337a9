"""What every SQL server backend does alike (write modes, new columns, failed batches), run against the
machine's MariaDB and PostgreSQL, each test in its own database. Server-specific types and error texts are
in test_storage_mariadb.py and test_storage_postgresql.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from collector.errors import StorageError
from storage.sql import MySQLStorage, PostgreSQLStorage, SQLStorage

Reader = Callable[[str], sa.Engine]


@dataclasses.dataclass(frozen=True)
class Server:
    kind: str                    # the backend's type, as error messages name it
    url: str
    storage: type[SQLStorage]
    double: str                  # how the server reflects a float column
    bad_value: str               # its message for a value its column's type refuses


@pytest.fixture(params=["mysql", "postgresql"])
def server(request: pytest.FixtureRequest) -> Server:
    if request.param == "mysql":
        return Server("mysql", request.getfixturevalue("mariadb_url"), MySQLStorage, "DOUBLE",
                      "Incorrect integer value")
    return Server("postgresql", request.getfixturevalue("postgres_url"), PostgreSQLStorage, "DOUBLE PRECISION",
                  "invalid input syntax")


def write(server: Server, rows: Any, **settings: Any) -> int:
    storage = server.storage(url=server.url, table=settings.pop("table", "t"), **settings)
    try:
        return storage.write(rows)
    finally:
        storage.close()


def test_append_adds_columns_and_types_none_first_columns_by_their_first_value(
    server: Server, reader: Reader, read: Any, types: Any
) -> None:
    rows = [{"id": 1, "a": "x", "late": None}, {"id": 2, "a": "y", "late": None}, {"id": 3, "late": 1.5}]
    write(server, rows, batch_size=2)
    write(server, [{"id": 4, "Extra": {"k": 1}}])
    found = types(reader(server.url))
    assert list(found) == ["id", "a", "late", "Extra"]
    assert found["late"] == server.double
    rows = read(reader(server.url))
    assert [(r["id"], r["a"], r["late"]) for r in rows] == [
        (1, "x", None), (2, "y", None), (3, None, 1.5), (4, None, None)
    ]


def test_replace_is_atomic_for_readers(server: Server, reader: Reader) -> None:
    write(server, [{"id": i, "gen": 1} for i in range(50)])
    engine = reader(server.url)
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
        assert write(server, rows(), mode="replace", batch_size=100) == 3000
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


def test_failed_replace_leaves_the_table_as_it_was(server: Server, reader: Reader, read: Any) -> None:
    write(server, [{"id": i, "n": i} for i in range(3)])
    rows = [{"id": 10, "n": 1}, {"id": 11, "n": 2}, {"id": 12, "n": "not a number"}]
    with pytest.raises(StorageError, match=f"{server.kind} table t"):
        write(server, rows, mode="replace", batch_size=2)
    assert read(reader(server.url)) == [{"id": i, "n": i} for i in range(3)]
    with reader(server.url).connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["t"]


def test_replace_creates_a_missing_table(server: Server, reader: Reader, read: Any) -> None:
    assert write(server, [{"id": 1}], mode="replace", key=["id"]) == 1
    assert read(reader(server.url)) == [{"id": 1}]


def test_upsert_inserts_and_updates(server: Server, reader: Reader, read: Any) -> None:
    key = ["site", "day"]
    first = [{"site": "a", "day": dt.date(2024, 1, 1), "clicks": 1, "cost": 2.0}]
    write(server, first, mode="upsert", key=key)
    written = write(
        server,
        [{"site": "a", "day": dt.date(2024, 1, 1), "clicks": 5},
         {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 7},
         {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 8}],
        mode="upsert", key=key,
    )
    assert written == 3
    assert read(reader(server.url)) == [
        {"site": "a", "day": dt.date(2024, 1, 1), "clicks": 5, "cost": 2.0},
        {"site": "b", "day": dt.date(2024, 1, 1), "clicks": 8, "cost": None},
    ]


def test_upsert_refuses_a_table_without_a_unique_key(server: Server, reader: Reader, read: Any) -> None:
    write(server, [{"id": 1, "v": "a"}])
    with pytest.raises(StorageError, match="no primary key or unique index"):
        write(server, [{"id": 1, "v": "b"}], mode="upsert", key=["id"])
    assert read(reader(server.url)) == [{"id": 1, "v": "a"}]


def test_failed_batch_leaves_the_table_as_it_was(
    server: Server, reader: Reader, read: Any, types: Any
) -> None:
    write(server, [{"id": 0, "n": 0}])
    rows = [{"id": 1, "n": 1}, {"id": 2, "n": 2}, {"id": 3, "n": 3, "extra": "x"}, {"id": 4, "n": "four"}]
    storage = server.storage(url=server.url, table="t", batch_size=2)
    reported: list[int] = []
    storage.bind(reported.append)
    try:
        with pytest.raises(StorageError) as caught:
            storage.write(rows)
    finally:
        storage.close()
    assert f"{server.kind} table t" in caught.value.message and server.bad_value in caught.value.message
    assert reported == [2]
    assert read(reader(server.url)) == [{"id": 0, "n": 0}, {"id": 1, "n": 1}, {"id": 2, "n": 2}]
    assert list(types(reader(server.url))) == ["id", "n"]      # the failed batch's column was undone


def test_failed_first_batch_leaves_no_table(server: Server, reader: Reader) -> None:
    with pytest.raises(StorageError):
        write(server, [{"id": 1}, {"id": 2**70}])         # out of BIGINT's range
    with reader(server.url).connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
