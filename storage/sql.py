"""SQL storage backends (MySQL/MariaDB, PostgreSQL, SQLite) on SQLAlchemy Core: create, evolve, write rows."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from collector.errors import SettingError, StorageError, UnsafePathError
from collector.masking import mask_text
from collector.resources import databases, reach
from collector.resources.connections import Connection as NamedConnection
from collector.resources.dataroot import LocalFile
from collector.types import Secret
from storage.base import Row
from storage.sql_plan import gc_paused
from storage.sql_table import Mode, SQLTableWriter, TableState
from storage.sql_types import dump_json, json_default

# MySQL/MariaDB identifiers are at most 64 characters; staging names add `__new_` + 8 hex characters.
MYSQL_NAME_ROOM = 48


class SQLStorage(SQLTableWriter):
    """Shared machinery of the SQL backends: batches, transactions and modes; subclasses say how to connect.

    Rows go in batches of `batch_size`, each in its own transaction, through the driver's executemany
    (`SQLTableWriter` types the columns, evolves the table and turns a batch into the driver's tuples).

    Modes:
    - append: insert.
    - upsert: insert, or update the row with the same `key` (the table gets a primary key on `key`).
    - replace: the first `write` of this instance replaces the table's rows atomically (later `write`
      calls of the same instance append, so a job may hand its rows over in several calls).
    Tables are created when missing and gain a column when rows bring a new one; columns are never
    dropped, and rows lacking a column leave it NULL.
    """

    def _write(self, rows: Iterable[Row]) -> int:
        conn = self._connect()
        if self.mode == "replace" and not self._replaced:
            if self.DIALECT == "mysql":
                count = self._replace_by_rename(conn, rows)
            else:
                count = self._replace_in_transaction(conn, rows)
            self._replaced = True
            return count
        return self._write_batches(conn, rows)

    def _check(self) -> str:
        """Connect and log in as a write would (through the egress policy) and run `SELECT 1`; no table is made and
        nothing is written."""
        try:
            engine = self._create_engine()
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1").scalar_one()
            finally:
                engine.dispose()
        except (StorageError, UnsafePathError):
            raise
        except Exception as exc:
            reason = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else f"{exc}"
            reason = f"{type(getattr(exc, 'orig', None) or exc).__name__}: {' '.join(reason.split())}"
            message = mask_text(f"could not connect to {self.describe()}: {reason}", self._secrets())
            raise StorageError(message[:2000], details={"table": self.table}) from None
        return f"connected to {self.describe()} and ran SELECT 1"

    # -- modes

    def _target(self, conn: Connection) -> TableState:
        if self._state is None:
            with self._guard("looking at the table"), conn.begin():
                self._state = self._look(conn, self.table)
        return self._state

    def _write_batches(self, conn: Connection, rows: Iterable[Row]) -> int:
        """append/upsert: every batch commits on its own."""
        state = self._target(conn)
        total = 0
        for _, batch in self._batches(rows):
            with self._guard(f"batch of {len(batch)} rows from row {total + 1}"), gc_paused():
                try:
                    self._store_batch(conn, batch, state)
                except BaseException:
                    self._state = None      # look again next time: DDL may or may not have stayed
                    raise
            total += len(batch)
            self._written(len(batch))
        if self._pending:
            with self._guard("adding columns"), conn.begin():
                self._add_pending(conn, state)
        return total

    def _store_batch(self, conn: Connection, batch: list[Row], state: TableState) -> None:
        if self.DIALECT != "mysql":
            # PostgreSQL and SQLite roll DDL back with the batch: a failed batch leaves no new column.
            with conn.begin():
                self._insert(conn, state.name, self._prepare(conn, batch, state), batch)
            return
        # MySQL commits DDL on the spot, so a failed batch undoes its own CREATE/ADD COLUMN by hand.
        with conn.begin():
            prepared = self._prepare(conn, batch, state)
        try:
            with conn.begin():
                self._insert(conn, state.name, prepared, batch)
        except BaseException:
            table = self._quote(state.name)
            with contextlib.suppress(SQLAlchemyError), conn.begin():
                if prepared.created:
                    conn.exec_driver_sql(f"DROP TABLE {table}")
                for name in prepared.added:
                    conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {self._quote(name)}")
            raise

    def _replace_in_transaction(self, conn: Connection, rows: Iterable[Row]) -> int:
        """PostgreSQL and SQLite: DELETE and all INSERTs in one transaction.

        That is truly atomic there: both have transactional DDL (a new column is rolled back with the
        rest) and readers keep seeing the committed rows until COMMIT (PostgreSQL by MVCC; SQLite because
        a writer holds only a RESERVED lock until commit). DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe
        in PostgreSQL. Renaming a staging table would lose grants, views and indexes made on the table.
        """
        total = 0
        transaction = conn.begin()
        try:
            with self._guard("looking at the table"):
                state = self._state = self._look(conn, self.table)
                if state.exists:
                    conn.exec_driver_sql(f"DELETE FROM {self._quote(state.name)}")
            for _, batch in self._batches(rows):
                with self._guard(f"batch of {len(batch)} rows from row {total + 1}"), gc_paused():
                    self._insert(conn, state.name, self._prepare(conn, batch, state), batch)
                total += len(batch)
            with self._guard("committing the replacement"):
                self._add_pending(conn, state)
                transaction.commit()
        except BaseException:
            self._state = None
            with contextlib.suppress(SQLAlchemyError):
                transaction.rollback()
            raise
        if total:
            self._written(total)
        return total

    def _replace_by_rename(self, conn: Connection, rows: Iterable[Row]) -> int:
        """MySQL/MariaDB: fill a staging table, then swap it in with one RENAME TABLE.

        A transactional DELETE+INSERT is not atomic there: ALTER TABLE (a new column mid-way) commits
        the open transaction. `RENAME TABLE t TO old, stage TO t` swaps both names in one atomic step, so
        readers see the old table or the new one, never a half-written one.
        """
        token = secrets.token_hex(4)
        stage = TableState(f"{self.table[:MYSQL_NAME_ROOM]}__new_{token}", False, set())
        old = f"{self.table[:MYSQL_NAME_ROOM]}__old_{token}"
        total = 0
        try:
            with self._guard("preparing a staging table"), conn.begin():
                target = self._state = self._look(conn, self.table)
                if target.exists:
                    # LIKE copies columns, keys and indexes, so the swapped-in table is the same table.
                    q = self._quote
                    conn.exec_driver_sql(f"CREATE TABLE {q(stage.name)} LIKE {q(target.name)}")
                    stage.exists, stage.columns = True, set(target.columns)
            for _, batch in self._batches(rows):
                with self._guard(f"batch of {len(batch)} rows from row {total + 1}"), gc_paused():
                    with conn.begin():
                        prepared = self._prepare(conn, batch, stage)
                    with conn.begin():
                        self._insert(conn, stage.name, prepared, batch)
                    del prepared                # its tuples go while the collector is still off
                total += len(batch)
            with self._guard("swapping in the new rows"), conn.begin():
                self._add_pending(conn, stage)
                if stage.exists:
                    q = self._quote
                    if target.exists:
                        conn.exec_driver_sql(
                            f"RENAME TABLE {q(target.name)} TO {q(old)}, {q(stage.name)} TO {q(target.name)}"
                        )
                        conn.exec_driver_sql(f"DROP TABLE {q(old)}")
                    else:
                        conn.exec_driver_sql(f"RENAME TABLE {q(stage.name)} TO {q(target.name)}")
                    stage.name = target.name
                    self._state = stage
        except BaseException:
            self._state = None
            with contextlib.suppress(SQLAlchemyError), conn.begin():
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self._quote(stage.name)}")
            raise
        self._plans.clear()         # plans name the staging table
        if total:
            self._written(total)
        return total


# ----------------------------------------------------------------------------------------- backends


class _ServerStorage(SQLStorage):
    """A database server reached by a `connection` the operator named, by hostname/db/username/password, or by
    a SQLAlchemy URL."""

    BACKENDS: ClassVar[tuple[str, ...]] = ()
    DRIVER: ClassVar[str] = ""

    def __init__(
        self,
        *,
        table: str,
        hostname: str | None = None,
        db: str | None = None,
        username: str | None = None,
        password: Secret | None = None,
        port: int | None = None,
        url: Secret | None = None,
        connection: str | None = None,
        mode: Mode = "append",
        key: list[str] | None = None,
        batch_size: int = 1000,
    ) -> None:
        self._init_common(table=table, mode=mode, key=key, batch_size=batch_size)
        self.hostname, self.db, self.username, self.port = hostname, db, username, port
        self.password = Secret(password) if password is not None else None
        self.url = Secret(url) if url is not None else None
        self.connection = connection
        self._connection: NamedConnection | None = None
        if connection is not None:
            given = [n for n, v in (("url", url), ("hostname", hostname), ("db", db), ("username", username),
                                    ("password", password), ("port", port)) if v is not None]
            if given:
                raise SettingError("connection", f"give either connection or {', '.join(given)}, not both: "
                                                 "the connection names the database")
            self._connection = reach.connection(connection, kinds=("database",))
            if self._connection.backend not in self.BACKENDS:
                raise SettingError("connection", f"connection {connection!r} is a {self._connection.backend} "
                                                 f"database; storage type {self.TYPE!r} needs a "
                                                 f"{' or '.join(self.BACKENDS)} one")
            self._url = self._adapt(self._connection.url)  # type: ignore[arg-type]
        elif url:
            self._url = self._parse_url(url)
        elif hostname and db and username:
            self._url = databases.check_url(URL.create(
                f"{self.BACKENDS[0]}+{self.DRIVER}", username=username, password=password or None,
                host=hostname, port=port, database=db, query=self._url_query(),
            ), setting="url", host_setting="hostname", backends=self.BACKENDS)
        else:
            missing = [n for n, v in (("hostname", hostname), ("db", db), ("username", username)) if not v]
            raise ValueError(
                f"give a connection, a url, or hostname, db and username (missing: {', '.join(missing)})"
            )

    def _url_query(self) -> dict[str, str]:
        return {}

    def _parse_url(self, url: str) -> URL:
        parsed = databases.check_url(url, setting="url", backends=self.BACKENDS)
        return self._adapt(parsed)

    def _adapt(self, url: URL) -> URL:
        """The URL with this backend's driver, and the query parameters it needs."""
        url = url.set(drivername=f"{url.get_backend_name()}+{self.DRIVER}")
        missing = {k: v for k, v in self._url_query().items() if k not in url.query}
        return url.update_query_dict(missing) if missing else url

    def _secrets(self) -> list[str]:
        found = [s for s in (self.password, self._url.password) if s]
        if self._connection is not None:
            found += self._connection.secrets
        return [str(s) for s in found]

    def describe(self) -> str:
        where = f" (connection {self.connection!r})" if self.connection else ""
        return f"{super().describe()}{where}"

    def _create_engine(self) -> Engine:
        options: dict[str, Any] = {
            "hide_parameters": True,       # row values stay out of error messages and logs
            "paramstyle": "format",        # positional, so rows go to executemany as tuples
            "json_serializer": dump_json,
            "pool_size": 1,
        }
        if self._connection is not None:
            return self._connection.create_engine(drivername=self._url.drivername, query=self._url_query(),
                                                  **options)
        return databases.create_engine(self._url, **options)


class MySQLStorage(_ServerStorage):
    """Rows into a MySQL or MariaDB table (PyMySQL)."""

    TYPE = "mysql"
    DIALECT = "mysql"
    BACKENDS = ("mysql", "mariadb")
    DRIVER = "pymysql"

    def _url_query(self) -> dict[str, str]:
        return {"charset": "utf8mb4"}       # 4-byte UTF-8: emoji and all of Unicode


class PostgreSQLStorage(_ServerStorage):
    """Rows into a PostgreSQL table (psycopg 3)."""

    TYPE = "postgresql"
    DIALECT = "postgresql"
    BACKENDS = ("postgresql",)
    DRIVER = "psycopg"


class SQLiteStorage(SQLStorage):
    """Rows into a table of a SQLite database file: `path` under the data root (COLLECTOR_DATA_DIR), or under
    the root of a `files` `connection`, or the file of a sqlite `database` connection (then no `path`)."""

    TYPE = "sqlite"
    DIALECT = "sqlite"

    def __init__(
        self,
        *,
        table: str,
        path: str | None = None,
        connection: str | None = None,
        mode: Mode = "append",
        key: list[str] | None = None,
        batch_size: int = 1000,
    ) -> None:
        self._init_common(table=table, mode=mode, key=key, batch_size=batch_size)
        self.path, self.connection = path, connection
        self._connection: NamedConnection | None = None
        self._file: LocalFile | None = None
        named = reach.connection(connection, kinds=("files", "database")) if connection is not None else None
        if named is not None and named.kind == "database":
            if named.backend != "sqlite":
                raise SettingError("connection", f"connection {connection!r} is a {named.backend} database; "
                                                 "storage type 'sqlite' needs a sqlite one (or a files connection)")
            if path is not None:
                raise SettingError("path", f"connection {connection!r} names the database file; drop path")
            self._connection = named
        elif path is None:
            raise SettingError("path", "path must name the SQLite database file (relative to "
                                       f"{'the connection' if named else 'the data root'}), e.g. 'rows.db'")
        else:
            self._file = reach.local_file(path, connection=named, write=True)

    def describe(self) -> str:
        where = f" (connection {self.connection!r})" if self.connection else ""
        return f"{super().describe()}{where}"

    def _check(self) -> str:
        if self._file is not None and not self._file.exists():
            try:   # connecting would create the database file: say whether it could be, instead
                return self._file.check_writable()
            except PermissionError as exc:
                raise StorageError(f"cannot write to {self.describe()}: {exc}", details={"table": self.table}) from None
        return super()._check()

    def _create_engine(self) -> Engine:
        options: dict[str, Any] = {"hide_parameters": True, "json_serializer": dump_json}
        if self._connection is not None:
            engine = self._connection.create_engine(drivername="sqlite+pysqlite", **options)
        else:
            assert self._file is not None
            # Checked again here, folder by folder without following a symlink, right before SQLite opens it.
            database = self._file.checked_path(create_folders=True)
            engine = databases.create_engine(URL.create("sqlite+pysqlite", database=database), **options)

        # pysqlite's own transaction handling commits DDL outside transactions; driving BEGIN ourselves
        # makes CREATE/ALTER part of the batch transaction (rolled back with it). IMMEDIATE takes the write
        # lock up front, so two writers wait (busy timeout) instead of deadlocking on lock upgrade.
        @sa.event.listens_for(engine, "connect")
        def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine


__all__ = ["MySQLStorage", "PostgreSQLStorage", "SQLStorage", "SQLiteStorage", "dump_json", "json_default"]
