"""Rows of a SELECT run on a PostgreSQL, MySQL/MariaDB or SQLite database, streamed in chunks."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Result
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError

from collector.incremental import Incremental
from collector.masking import mask_text
from collector.platform import FatalError, Platform, Secret, SettingError, Storage, TransientError
from collector.resources import databases, reach
from collector.resources.dataroot import LocalFile
from collector.resources.sql_guard import check_query

COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
CURSOR_PARAM = "collector_cursor"  # the bound parameter the bookmark travels in


class SqlQuery(Platform):
    """Rows of one read-only query (a statement starting with SELECT or WITH) on the database at `url`.

    `url` is a SQLAlchemy URL (`sqlite:///app.db`, a file under the data root, `postgresql://user:pw@host/db`,
    `mysql://user:pw@host/db`), or `connection` names a database connection the operator defined; `params`
    are bound to `:name` placeholders in `query` (so a colon before a word or digit in a literal, as in
    `'10:30'`, is written `\\:`). Rows are fetched `chunk_size` at a time from a server-side cursor (SQLite
    reads lazily by itself), and each chunk goes to `storage` as it arrives, so memory stays flat however many
    rows the query returns. For the same reason the `processed` dataset keeps only the first 100 rows as a
    sample; the full result goes to `storage`. The statement runs in a read-only session (SQLite `query_only`,
    PostgreSQL and MySQL read-only transactions), so a data-changing statement fails even when it hides
    behind WITH; functions and clauses that reach files or other servers (`INTO OUTFILE`, `LOAD_FILE(`,
    `pg_read_file(`, `COPY`, `dblink`, ...) are refused before the job is queued. An inline URL's host must
    pass the egress policy and the URL may carry only the usual connection parameters; the statement is
    stopped on the server when the job times out or is cancelled.

    Incremental mode: with `cursor_field` (a column of the query's result, e.g. `updated_at`), a run after the
    first of the spec's `state_key` (or schedule) runs `SELECT * FROM (<query>) WHERE <cursor_field> > :bookmark`,
    the column name checked against the result and quoted, the newest value the last finished run saw bound as a
    parameter (`cursor_start` before there is one), and saves the newest value it saw.
    """

    SAMPLE_ROWS = 100   # rows kept as the `processed` dataset; the rest only go to storage

    def __init__(
        self,
        query: str,
        url: Secret | None = None,
        connection: str | None = None,
        params: dict | None = None,
        chunk_size: int = 10000,
        cursor_field: str | None = None,
        cursor_start: str | None = None,
        storage: Storage | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be 1 or more")
        if cursor_field is not None and not COLUMN_NAME.fullmatch(cursor_field):
            raise SettingError("cursor_field", f"cursor_field {cursor_field[:80]!r} is not a column name; give the "
                                               "name of a result column: letters, digits and _ (alias it in the "
                                               "query if it is not)")
        if cursor_start is not None and cursor_field is None:
            raise SettingError("cursor_field", "cursor_start needs cursor_field, the column that orders the rows")
        if cursor_field is not None and CURSOR_PARAM in (params or {}):
            raise SettingError("params", f"{CURSOR_PARAM!r} is the parameter the bookmark is bound to; rename yours")
        self.cursor_field, self.cursor_start = cursor_field, cursor_start
        self.named = reach.connection(connection, kinds=("database",)) if connection is not None else None
        self.file: LocalFile | None = None
        if self.named is not None:
            if url is not None:
                raise SettingError("url", f"give either url or connection, not both: connection {connection!r} "
                                          "names the database")
            parsed = databases.check_url(self.named.url, setting="connection", trusted=True)  # type: ignore[arg-type]
        elif url is None:
            raise SettingError("url", "give url (a SQLAlchemy URL) or the name of a database connection")
        else:
            parsed = databases.check_url(url, setting="url")
            if parsed.get_backend_name() == "sqlite":
                self.file = sqlite_file(parsed)
        self.url, self.connection, self.query, self.params = url, connection, query, dict(params or {})
        check_query(query, databases.backend_of(parsed))
        self.chunk_size, self.storage = chunk_size, storage
        self._url = parsed

    def _secrets(self) -> list[str]:
        found = [s for s in (self.url, self._url.password) if s]
        return [str(s) for s in found] + list(self.named.secrets if self.named is not None else ())

    def _mask(self, text: str) -> str:
        return mask_text(text, self._secrets())

    def _engine(self) -> sa.Engine:
        url = self._url
        if self.file is not None:
            # Checked again here, folder by folder without following a symlink, right before SQLite opens it.
            if not self.file.exists():
                raise FatalError(f"no SQLite database file at {self.file.display!r} under the data root of this "
                                 "worker; check the url")
            url = url.set(database=self.file.checked_path(create_folders=False))
        options: dict[str, Any] = {"poolclass": sa.pool.NullPool, "hide_parameters": True}
        try:
            if self.named is not None:
                return self.named.create_engine(drivername=self._url.drivername, **options)
            return databases.create_engine(url, **options)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise FatalError(self._mask(f"cannot use url {self._url!r}: {exc}")) from None

    def _check(self) -> str:
        """Connect and log in as the job would (read-only session, through the egress policy) and run `SELECT 1`;
        the query itself is not run."""
        engine = self._engine()
        try:
            with self._connect(engine, self._url.get_backend_name()) as connection:
                connection.execute(sa.text("SELECT 1")).scalar_one()
        except SQLAlchemyError as exc:
            error = TransientError if isinstance(exc, OperationalError) else FatalError
            raise error(self._describe(exc, doing="connecting to the")) from None
        finally:
            engine.dispose()
        return f"connected to the {self._where()} and ran SELECT 1"

    def _run(self, ctx):
        ctx.add_secrets(self._secrets())
        backend = self._url.get_backend_name()
        engine = self._engine()
        sample: list[dict[str, Any]] = []
        rows = chunks = 0
        incremental = None
        if self.cursor_field:
            incremental = Incremental(self.cursor_field, start=self.cursor_start, saved=ctx.saved_state)
        try:
            with self._connect(engine, backend) as connection:
                result = self._execute(connection, incremental)
                names = list(result.keys())
                repeated = sorted({n for n in names if names.count(n) > 1})
                if repeated:
                    raise FatalError(f"the query returns column(s) {repeated} more than once; give them aliases")
                for partition in result.partitions(self.chunk_size):
                    chunk = [dict(zip(names, row, strict=True)) for row in partition]
                    if incremental is not None:
                        for row in chunk:
                            incremental.note(row[self.cursor_field])
                    chunks += 1
                    rows += len(chunk)
                    if len(sample) < self.SAMPLE_ROWS:
                        sample.extend(chunk[: self.SAMPLE_ROWS - len(sample)])
                    if self.storage is not None:
                        self.storage.write(chunk)
                    ctx.progress(rows, None, f"chunk {chunks}, {rows} rows")
        except OperationalError as exc:
            # Lost or refused connections are worth another try; SQLite reports bad SQL this way too.
            transient = exc.connection_invalidated or (rows == 0 and _is_connection_failure(exc))
            raise (TransientError if transient else FatalError)(self._describe(exc)) from None
        except DBAPIError as exc:
            raise (TransientError if exc.connection_invalidated else FatalError)(self._describe(exc)) from None
        except SQLAlchemyError as exc:
            raise FatalError(self._describe(exc)) from None
        finally:
            engine.dispose()
        if rows == 0:
            ctx.progress(0, 0, "the query returned no rows")
        ctx.dataset("processed", sample)
        summary: dict[str, Any] = {"rows": rows, "chunks": chunks, "sample_rows": len(sample)}
        if self.storage is not None:
            summary["stored"] = self.storage.rows_written
        if incremental is not None:
            ctx.save_state(incremental.state())
            summary["incremental"] = incremental.summary()
        return summary

    def _execute(self, connection: Connection, incremental: Incremental | None) -> Result:
        """The query's result; in incremental mode, only the rows newer than the bookmark. The cursor column is
        checked against the columns the query returns (a query that returns no row), then quoted; the bookmark
        is bound, never written into the statement."""
        if incremental is None:
            return connection.execute(sa.text(self.query), self.params)
        inner = self.query.strip().rstrip(";").rstrip()
        wrapped = f"SELECT * FROM (\n{inner}\n) AS collector_rows"   # newlines: a trailing -- comment stays one
        names = list(connection.execute(sa.text(f"{wrapped} WHERE 1 = 0"), self.params).keys())
        if self.cursor_field not in names:
            raise FatalError(f"cursor_field {self.cursor_field!r} is not a column of the query's result; its "
                             f"columns are {names[:50]}")
        if incremental.since is None:
            return connection.execute(sa.text(self.query), self.params)
        column = connection.dialect.identifier_preparer.quote_identifier(str(self.cursor_field))
        return connection.execute(sa.text(f"{wrapped} WHERE {column} > :{CURSOR_PARAM}"),
                                  {**self.params, CURSOR_PARAM: incremental.since})

    def _connect(self, engine: sa.Engine, backend: str) -> Connection:
        """A connection in a read-only session that streams results (a server-side cursor where there is one)."""
        connection = engine.connect()
        try:
            if backend == "sqlite":
                connection.exec_driver_sql("PRAGMA query_only = ON")
            elif backend in ("mysql", "mariadb"):
                connection.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
            if connection.in_transaction():
                connection.commit()     # the session settings hold from the next transaction, the query's
            options: dict[str, Any] = {"stream_results": True, "yield_per": self.chunk_size}
            if backend == "postgresql":
                options["postgresql_readonly"] = True
            return connection.execution_options(**options)
        except BaseException:
            connection.close()
            raise

    def _where(self) -> str:
        if self.named is not None:
            return f"{self._url.get_backend_name()} database of connection {self.named.name!r}"
        host = f" at {self._url.host}:{self._url.port or 'default port'}" if self._url.host else ""
        return f"{self._url.get_backend_name()} database {self._url.database!r}{host}"

    def _describe(self, exc: SQLAlchemyError, *, doing: str = "query on") -> str:
        reason = getattr(exc, "orig", None) or exc
        text = " ".join(f"{reason}".split())   # drivers' multi-line texts on one line
        return self._mask(f"{doing} {self._where()} failed: {type(reason).__name__}: {text}")


def sqlite_file(url: URL) -> LocalFile | None:
    """The file a client's SQLite URL names, under the data root (None for an in-memory database);
    `SettingError("url")` for one outside it or a URI filename that could name any file."""
    database = url.database or ""
    if database in ("", ":memory:"):
        if url.query:  # `?uri=true&mode=rwc` would make SQLite open a file named `:memory:?...` where the worker runs
            raise SettingError("url", "an in-memory SQLite database (sqlite:// or sqlite:///:memory:) takes no "
                                      "query parameters")
        return None
    if database.startswith("file:") or "uri" in url.query:
        raise SettingError("url", "SQLite URI filenames (file:..., ?uri=true) are not taken; give the database "
                                  "as sqlite:///path/relative/to/the/data/root.db")
    try:
        return reach.local_file(database, setting="url")
    except SettingError as exc:
        raise SettingError("url", f"the SQLite database of url: {exc.message}") from None


def _is_connection_failure(exc: OperationalError) -> bool:
    """Whether an OperationalError reads like the server could not be reached, rather than bad SQL."""
    text = str(getattr(exc, "orig", exc)).lower()
    return any(word in text for word in ("connect", "timeout", "timed out", "refused", "server has gone away",
                                         "lost connection", "database is locked", "unable to open"))
