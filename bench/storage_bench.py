"""Rows/s of the SQL storage backends vs their bare driver's executemany: `python bench/storage_bench.py`."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import pymysql

from collector import egress
from collector.config import Config
from collector.resources import reach
from storage.base import Storage
from storage.sql import MySQLStorage, PostgreSQLStorage, SQLiteStorage

COLUMNS = ["id", "a", "b", "x", "y", "name", "label", "code", "flag", "ts"]
# The same column types the backend infers from these rows, so both sides write into the same table.
DDL = {
    "mysql": "id BIGINT, a BIGINT, b BIGINT, x DOUBLE, y DOUBLE, name MEDIUMTEXT, label MEDIUMTEXT, "
    "code MEDIUMTEXT, flag BOOL, ts DATETIME",
    "postgresql": "id BIGINT, a BIGINT, b BIGINT, x DOUBLE PRECISION, y DOUBLE PRECISION, name TEXT, "
    "label TEXT, code TEXT, flag BOOLEAN, ts TIMESTAMP",
    "sqlite": "id BIGINT, a BIGINT, b BIGINT, x DOUBLE, y DOUBLE, name TEXT, label TEXT, code TEXT, "
    "flag BOOLEAN, ts DATETIME",
}


def make_rows(count: int) -> list[dict[str, Any]]:
    start = dt.datetime(2024, 1, 1)
    return [
        {
            "id": i, "a": i * 7, "b": -i, "x": i * 0.25, "y": i / 3, "name": f"publisher {i}",
            "label": "a constant label", "code": f"C{i % 977:04d}", "flag": i % 3 == 0,
            "ts": start + dt.timedelta(seconds=i),
        }
        for i in range(count)
    ]


@contextmanager
def mariadb_database() -> Iterator[str]:
    name = f"collector_bench_{secrets.token_hex(4)}"
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"collector_bench_{secrets.token_hex(4)}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def insert_sql(placeholder: str) -> str:
    return f"INSERT INTO t ({', '.join(COLUMNS)}) VALUES ({', '.join([placeholder] * len(COLUMNS))})"


def chunks(values: list[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def bare_mariadb(db: str, values: list[tuple[Any, ...]], batch: int) -> None:
    conn = pymysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", database=db, charset="utf8mb4"
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE TABLE t ({DDL['mysql']}) CHARACTER SET utf8mb4")
            for part in chunks(values, batch):
                cursor.executemany(insert_sql("%s"), part)
                conn.commit()
    finally:
        conn.close()


def bare_postgres(db: str, values: list[tuple[Any, ...]], batch: int) -> None:
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={db}") as conn:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE TABLE t ({DDL['postgresql']})")
            conn.commit()
            for part in chunks(values, batch):
                cursor.executemany(insert_sql("%s"), part)
                conn.commit()


def bare_sqlite(path: str, values: list[tuple[Any, ...]], batch: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"CREATE TABLE t ({DDL['sqlite']})")
        for part in chunks(values, batch):
            # The text the backend stores (SQLAlchemy's DATETIME format; sqlite3's own adapter is deprecated).
            conn.executemany(insert_sql("?"), [(*v[:-1], v[-1].isoformat(" ", "microseconds")) for v in part])
            conn.commit()
    finally:
        conn.close()


def drop_table(kind: str, where: str) -> None:
    if kind == "mysql":
        conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=where, autocommit=True)
        with conn.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS t")
        conn.close()
    elif kind == "postgresql":
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={where}", autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS t")
    else:
        with sqlite3.connect(where) as conn:
            conn.execute("DROP TABLE IF EXISTS t")
        conn.close()


def take_turns(
    repeats: int, bare: Callable[[], None], ours: Callable[[], None], reset: Callable[[], None]
) -> list[tuple[float, float]]:
    """(bare, backend) seconds of each of `repeats` turns, the two sides running back to back in each turn,
    so a slow spell of the machine (this VM's CPU speed and SQLite's fsyncs both swing) falls on both."""
    turns = []
    for _ in range(repeats):
        times = []
        for run in (bare, ours):
            reset()
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        turns.append((times[0], times[1]))
    reset()
    return turns


def through_backend(make: Callable[[], Storage], rows: list[dict[str, Any]]) -> Callable[[], None]:
    def run() -> None:
        storage = make()
        try:
            assert storage.write(rows) == len(rows)
        finally:
            storage.close()

    return run


@contextmanager
def sqlite_file() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="collector_bench_") as folder:
        reach.ensure(Config(data_dir=folder))   # the backend names its file relative to the data root
        yield os.path.join(folder, "bench.sqlite")


# (name, kind for drop_table, where the table lives, the bare driver's write, the backend for a batch size)
TARGETS: list[tuple[str, str, Callable[[], Any], Callable[..., None], Callable[[str, int], Storage]]] = [
    ("MariaDB (PyMySQL)", "mysql", mariadb_database, bare_mariadb,
     lambda db, b: MySQLStorage(url=f"mysql+pymysql://root@127.0.0.1:3306/{db}", table="t", batch_size=b)),
    ("PostgreSQL (psycopg 3)", "postgresql", postgres_database, bare_postgres,
     lambda db, b: PostgreSQLStorage(url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}", table="t",
                                     batch_size=b)),
    ("SQLite (sqlite3)", "sqlite", sqlite_file, bare_sqlite,
     lambda path, b: SQLiteStorage(path=os.path.basename(path), table="t", batch_size=b)),
]


def main() -> None:
    # The databases run on this host: allowed the way an operator would, with COLLECTOR_EGRESS_ALLOW.
    egress.install(egress.EgressPolicy.from_config(Config(egress_allow="127.0.0.1")))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5, help="turns of each side (default 5)")
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (default 1000 and all rows)")
    parser.add_argument("--only", choices=[kind for _, kind, *_ in TARGETS], action="append",
                        help="measure only this database (repeatable; default all three)")
    args = parser.parse_args()
    rows = make_rows(args.rows)
    values = [tuple(r[c] for c in COLUMNS) for r in rows]    # the bare driver gets ready-made tuples
    batches = args.batch or [1000, args.rows]
    results: list[tuple[str, int, float, float]] = []

    for name, kind, place, bare_write, backend in TARGETS:
        if args.only and kind not in args.only:
            continue
        with place() as where:
            for batch in batches:
                turns = take_turns(
                    args.repeats, partial(bare_write, where, values, batch),
                    through_backend(partial(backend, where, batch), rows), partial(drop_table, kind, where),
                )
                results.append((name, batch, turns))

    print(f"\n{args.rows:,} rows x {len(COLUMNS)} columns, {args.repeats} turns of bare then backend; "
          "each side connects, creates its table and commits every batch. Rows/s are each side's median; "
          "backend / bare is the median of the turns' ratios (lowest-highest in brackets)\n")
    print("| database | batch | bare executemany rows/s | backend rows/s | backend / bare |")
    print("|---|---:|---:|---:|---:|")
    for name, batch, turns in results:
        bare = statistics.median(b for b, _ in turns)
        ours = statistics.median(o for _, o in turns)
        ratios = sorted(b / o for b, o in turns)
        print(f"| {name} | {batch:,} | {args.rows / bare:,.0f} | {args.rows / ours:,.0f} | "
              f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}) |")

if __name__ == "__main__":
    main()
