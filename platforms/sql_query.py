"""Rows of a SELECT run on a PostgreSQL, MySQL/MariaDB or SQLite database, streamed in chunks."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError

from collector import databases
from collector.masking import mask_text
from collector.platform import FatalError, Platform, Secret, Storage, TransientError
from collector.sql_guard import check_query


class SqlQuery(Platform):
    """Rows of one read-only query (a statement starting with SELECT or WITH) on the database at `url`.

    `url` is a SQLAlchemy URL (`sqlite:////data/app.db`, `postgresql://user:pw@host/db`,
    `mysql://user:pw@host/db`); `params` are bound to `:name` placeholders in `query` (so a colon before a word
    or digit in a literal, as in `'10:30'`, is written `\\:`). Rows are fetched `chunk_size` at a time from a
    server-side cursor (SQLite reads lazily by itself), and each chunk goes to `storage` as it arrives, so
    memory stays flat however many rows the query returns. For the same reason
    the `processed` dataset keeps only the first 100 rows as a sample; the full result goes to `storage`.
    The statement runs in a read-only session (SQLite `query_only`, PostgreSQL and MySQL read-only
    transactions), so a data-changing statement fails even when it hides behind WITH; functions and clauses
    that reach files or other servers (`INTO OUTFILE`, `LOAD_FILE(`, `pg_read_file(`, `COPY`, `dblink`, ...)
    are refused before the job is queued. The host must pass the egress policy, the URL may carry only the
    usual connection parameters, and the statement is stopped on the server when the job times out or is
    cancelled.
    """

    SAMPLE_ROWS = 100   # rows kept as the `processed` dataset; the rest only go to storage

    def __init__(
        self,
        url: Secret,
        query: str,
        params: dict | None = None,
        chunk_size: int = 10000,
        storage: Storage | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be 1 or more")
        parsed = databases.check_url(url, setting="url")
        check_query(query, databases.backend_of(parsed))
        self.url, self.query, self.params = url, query, dict(params or {})
        self.chunk_size, self.storage = chunk_size, storage
        self._url = parsed

    def _secrets(self) -> list[str]:
        return [s for s in (str(self.url), self._url.password) if s]

    def _mask(self, text: str) -> str:
        return mask_text(text, self._secrets())

    def _run(self, ctx):
        ctx.add_secrets(self._secrets())
        backend = self._url.get_backend_name()
        database = self._url.database
        if backend == "sqlite" and database not in (None, "", ":memory:") and not database.startswith("file:"):
            if not os.path.isfile(database):
                raise FatalError(f"no SQLite database file at {database!r} on this worker; check the url")
        try:
            engine = databases.create_engine(self._url, poolclass=sa.pool.NullPool, hide_parameters=True)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise FatalError(self._mask(f"cannot use url {self._url!r}: {exc}")) from None
        sample: list[dict[str, Any]] = []
        rows = chunks = 0
        try:
            with self._connect(engine, backend) as connection:
                result = connection.execute(sa.text(self.query), self.params)
                names = list(result.keys())
                repeated = sorted({n for n in names if names.count(n) > 1})
                if repeated:
                    raise FatalError(f"the query returns column(s) {repeated} more than once; give them aliases")
                for partition in result.partitions(self.chunk_size):
                    chunk = [dict(zip(names, row, strict=True)) for row in partition]
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
        return summary

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

    def _describe(self, exc: SQLAlchemyError) -> str:
        reason = getattr(exc, "orig", None) or exc
        host = f" at {self._url.host}:{self._url.port or 'default port'}" if self._url.host else ""
        where = f"{self._url.get_backend_name()} database {self._url.database!r}{host}"
        return self._mask(f"query on {where} failed: {type(reason).__name__}: {reason}")


def _is_connection_failure(exc: OperationalError) -> bool:
    """Whether an OperationalError reads like the server could not be reached, rather than bad SQL."""
    text = str(getattr(exc, "orig", exc)).lower()
    return any(word in text for word in ("connect", "timeout", "timed out", "refused", "server has gone away",
                                         "lost connection", "database is locked", "unable to open"))
