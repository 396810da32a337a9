"""Fixtures giving each test a fresh, uniquely named MariaDB or PostgreSQL database, dropped afterwards."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa

from collector.config import Config

HOST = "127.0.0.1"


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when the services are required (`COLLECTOR_REQUIRE_SERVICES=1`, as in CI)."""
    if os.environ.get("COLLECTOR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COLLECTOR_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def database_name() -> str:
    return f"collector_test_{secrets.token_hex(6)}"


def mariadb_admin(*, host: str = HOST, port: int = 3306) -> Any:
    """An autocommit root connection to MariaDB; skips (or fails, see `unavailable`) when it is unreachable."""
    import pymysql

    try:
        return pymysql.connect(host=host, port=port, user="root", password="", connect_timeout=3, autocommit=True)
    except pymysql.err.OperationalError as exc:
        unavailable(f"MariaDB at {host}:{port} (user root) is unreachable: {exc}")


def postgres_admin(*, host: str = HOST, port: int = 5432) -> Any:
    """An autocommit connection as postgres; skips (or fails, see `unavailable`) when it is unreachable."""
    import psycopg

    try:
        return psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=3,
                               autocommit=True)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {host}:{port} (user postgres) is unreachable: {exc}")


@pytest.fixture
def config(config: Config) -> Config:
    """The API and workers of these tests reach the databases on this host, as an operator allows them to."""
    return dataclasses.replace(config, egress_allow=HOST)


@pytest.fixture
def mariadb_url(allow_loopback: None) -> Iterator[str]:
    admin = mariadb_admin()
    name = database_name()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield f"mysql+pymysql://root@{HOST}:3306/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def postgres_url(allow_loopback: None) -> Iterator[str]:
    admin = postgres_admin()
    name = database_name()
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg://postgres@{HOST}:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def reader() -> Iterator[Callable[[str], sa.Engine]]:
    """Engines for reading tables back in tests, disposed at the end of the test."""
    engines: list[sa.Engine] = []

    def make(url: str) -> sa.Engine:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def read_table(engine: sa.Engine, table: str = "t") -> list[dict[str, Any]]:
    """Rows of `table` ordered by its first column, typed by reflection."""
    with engine.connect() as conn:
        reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
        query = sa.select(reflected).order_by(*list(reflected.c)[:1])
        return [dict(row._mapping) for row in conn.execute(query)]


def column_types(engine: sa.Engine, table: str = "t") -> dict[str, str]:
    with engine.connect() as conn:
        return {c["name"]: str(c["type"]) for c in sa.inspect(conn).get_columns(table)}


@pytest.fixture
def read() -> Callable[..., list[dict[str, Any]]]:
    return read_table


@pytest.fixture
def types() -> Callable[..., dict[str, str]]:
    return column_types
