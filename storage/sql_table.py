"""One table of a SQL database as the backends use it: connection, errors, schema evolution, inserts."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, ClassVar, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SAWarning, SQLAlchemyError

from collector.errors import StorageError, UnsafePathError
from collector.masking import mask_text
from storage.base import Row, Storage
from storage.sql_plan import InsertPlan, Prepared, batch_columns, insert_statement, same_width
from storage.sql_types import ColumnType, column_type, quoted, value_kind, widen

Mode = Literal["append", "replace", "upsert"]
MODES = ("append", "replace", "upsert")

# How many rows of a batch are looked at to pick a new column's type: enough to see int-vs-float mixes,
# few enough that inference stays a rounding error next to the insert itself.
SAMPLE_ROWS = 1000


@dataclasses.dataclass
class TableState:
    """What is known of one table in the database: whether it exists and its columns (normalized)."""

    name: str
    exists: bool
    columns: set[str]


class SQLTableWriter(Storage):
    """One table of a SQL database: settings, connection, error messages, schema evolution, batched inserts.

    SQLAlchemy builds and compiles the statements (DDL, INSERT, upsert) but rows are handed to the driver
    as tuples, because SQLAlchemy's per-row parameter processing cost 60% of the throughput on SQLite.
    """

    DIALECT: ClassVar[str] = ""

    table: str
    mode: str
    key: list[str] | None
    batch_size: int

    def _init_common(self, *, table: str, mode: str, key: list[str] | None, batch_size: int) -> None:
        if not table:
            raise ValueError("table must name the table to write to")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "upsert" and not key:
            raise ValueError("mode 'upsert' needs key: the list of columns that identify a row")
        if key is not None and (not key or len(set(key)) != len(key)):
            raise ValueError("key must list distinct column names")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.table, self.mode, self.key, self.batch_size = table, mode, list(key) if key else None, batch_size
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._types: dict[str, ColumnType] = {}      # by column name as rows spell it
        self._state: TableState | None = None        # the target table, once looked at
        self._pending: set[str] = set()              # columns seen with None values only, so far
        self._plans: dict[tuple[Any, ...], InsertPlan] = {}
        self._replaced = False

    # -- what subclasses provide

    def _create_engine(self) -> Engine:
        raise NotImplementedError

    def _secrets(self) -> list[str]:
        return []

    # -- Storage API (write is the modes' business: SQLStorage)

    def describe(self) -> str:
        return f"{self.TYPE} table {self.table}"

    def close(self) -> None:
        conn, engine = self._conn, self._engine
        self._conn = self._engine = None
        try:
            if conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    conn.close()
        finally:
            if engine is not None:
                engine.dispose()

    # -- helpers

    def _normalize(self, name: str) -> str:
        # MySQL and SQLite match column names case-insensitively; PostgreSQL quotes, so matches exactly.
        return name if self.DIALECT == "postgresql" else name.lower()

    def _quote(self, name: str) -> str:
        assert self._engine is not None
        return self._engine.dialect.identifier_preparer.quote_identifier(name)

    def _error(self, doing: str, exc: BaseException) -> StorageError:
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            reason = str(exc.orig)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        message = f"could not write to {self.describe()} ({doing}): {reason.strip()}"
        message = mask_text(message, self._secrets())
        return StorageError(message[:2000], details={"table": self.table})

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Turn a database failure into a `StorageError` naming the table and never a password."""
        try:
            yield
        except (StorageError, UnsafePathError):   # a refused SQLite path says so itself
            raise
        except Exception as exc:
            error = self._error(doing, exc)
            raw = f"{exc}"
            # A cause whose text held a secret is not chained: tracebacks print causes too.
            hidden = mask_text(raw, self._secrets()) != raw
            raise error from (None if hidden else exc)

    def _connect(self) -> Connection:
        if self._conn is None:
            with self._guard("connecting"):
                if self._engine is None:
                    self._engine = self._create_engine()
                self._conn = self._engine.connect()
        return self._conn

    def _batches(self, rows: Iterable[Row]) -> Iterator[tuple[int, list[Row]]]:
        iterator, start = iter(rows), 0
        while batch := list(islice(iterator, self.batch_size)):
            yield start, batch
            start += len(batch)

    def _look(self, conn: Connection, name: str) -> TableState:
        """Whether table `name` exists, and its columns; checks upsert has a unique key to work with."""
        with warnings.catch_warnings():
            # Reflection warns about column types it does not know; only the names matter here.
            warnings.simplefilter("ignore", SAWarning)
            inspector = sa.inspect(conn)
            if not inspector.has_table(name):
                return TableState(name, False, set())
            columns = {self._normalize(c["name"]) for c in inspector.get_columns(name)}
            if self.mode == "upsert" and self.key:
                self._check_unique_key(inspector, name)
        return TableState(name, True, columns)

    def _check_unique_key(self, inspector: sa.Inspector, name: str) -> None:
        assert self.key is not None
        wanted = {self._normalize(k) for k in self.key}
        candidates = [inspector.get_pk_constraint(name).get("constrained_columns") or []]
        candidates += [u["column_names"] for u in inspector.get_unique_constraints(name)]
        candidates += [i["column_names"] for i in inspector.get_indexes(name) if i.get("unique")]
        if not any({self._normalize(c) for c in cols if c} == wanted for cols in candidates):
            raise StorageError(
                f"cannot upsert into {self.describe()}: it has no primary key or unique index on exactly "
                f"({', '.join(self.key)}); add one or write with another mode",
                details={"table": self.table},
            )

    # -- schema

    def _prepare(self, conn: Connection, batch: list[Row], state: TableState) -> Prepared:
        """Type new columns, then create the table or add the columns the batch brings.

        Rows that all have the first row's keys (the common case) get their parameter tuples made here,
        which is what proves they have no other key; any other batch is scanned for all its columns.
        """
        params = None
        first = list(batch[0])
        if same_width(batch):
            insert = self._typed(first, batch)
            if insert == first:         # a column of None only would be left out of the tuples, unproven
                try:
                    params = self._plan(state.name, tuple(insert)).params(batch, strict=True)
                except KeyError:
                    pass                # some row has another key in place of one of the first's
        if params is None:
            insert = self._typed(batch_columns(batch), batch)
        if self.key:
            missing = [k for k in self.key if k not in insert]
            if missing and (self.mode == "upsert" or not state.exists):
                raise StorageError(
                    f"cannot write to {self.describe()}: rows have no value for key column(s) "
                    f"{', '.join(missing)}",
                    details={"table": self.table},
                )
        created, added = self._apply_schema(conn, state, insert)
        return Prepared(tuple(insert), created, added, params)

    def _typed(self, names: list[str], batch: list[Row]) -> list[str]:
        """`names` that have a type, typing new ones by their values in the batch's first rows; a column
        with no value yet is pending (its type comes from its first value) and left out."""
        assert self._engine is not None
        dialect = self._engine.dialect
        sample = batch[:SAMPLE_ROWS]
        typed: list[str] = []
        for name in names:
            if name not in self._types:
                seen = [v for row in sample if (v := row.get(name)) is not None]
                if not seen:
                    seen = [v for row in batch if (v := row.get(name)) is not None][:1]
                if not seen:
                    self._pending.add(name)
                    continue
                kind = widen({value_kind(v) for v in seen})
                is_key = name in (self.key or ())
                self._types[name] = column_type(kind, dialect=dialect, key=is_key, values=seen)
                self._pending.discard(name)
            typed.append(name)
        return typed

    def _apply_schema(self, conn: Connection, state: TableState, names: list[str]) -> tuple[bool, list[str]]:
        if not state.exists:
            if names:
                self._create_table(conn, state.name, names)
                state.exists, state.columns = True, {self._normalize(n) for n in names}
                return True, []
            return False, []
        added = [n for n in names if self._normalize(n) not in state.columns]
        for name in added:
            self._add_column(conn, state.name, name)
            state.columns.add(self._normalize(name))
        return False, added

    def _column(self, name: str, *, key: bool = False) -> sa.Column[Any]:
        # Always quoted: SQLAlchemy quotes only the reserved words it knows, and SQLite has more (NOTHING).
        # autoincrement=False: a BIGINT primary key must not become AUTO_INCREMENT / BIGSERIAL.
        return sa.Column(quoted(name), self._types[name].type, nullable=not key, autoincrement=False)

    def _create_table(self, conn: Connection, name: str, columns: Sequence[str]) -> None:
        key = self.key or []
        table_args: dict[str, Any] = {"mysql_charset": "utf8mb4"} if self.DIALECT == "mysql" else {}
        table = sa.Table(
            quoted(name), sa.MetaData(), *[self._column(c, key=c in key) for c in columns],
            *([sa.PrimaryKeyConstraint(*key)] if key else []), **table_args,
        )
        table.create(conn)

    def _add_column(self, conn: Connection, table: str, name: str) -> None:
        assert self._engine is not None
        column = self._column(name)
        sa.Table(quoted(table), sa.MetaData(), column)      # CreateColumn needs the column in a table
        spec = sa.schema.CreateColumn(column).compile(dialect=self._engine.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {self._quote(table)} ADD COLUMN {spec}")

    def _add_pending(self, conn: Connection, state: TableState) -> None:
        """Columns that held only None in this write still appear in the table, as text.

        Text, because there was no value to type them by; a later non-text value is stored as its text.
        """
        if not state.exists:
            return
        assert self._engine is not None
        for name in sorted(self._pending):
            if self._normalize(name) not in state.columns:
                self._types[name] = column_type("mixed", dialect=self._engine.dialect, key=False, values=())
                self._add_column(conn, state.name, name)
                state.columns.add(self._normalize(name))
        self._pending.clear()

    # -- inserting

    def _plan(self, table_name: str, names: tuple[str, ...]) -> InsertPlan:
        cached = self._plans.get((table_name, names))
        if cached is not None:
            return cached
        assert self._engine is not None
        dialect = self._engine.dialect
        table = sa.Table(quoted(table_name), sa.MetaData(), *[self._column(n) for n in names])
        statement = insert_statement(table, names, dialect=self.DIALECT, mode=self.mode, key=self.key)
        compiled = statement.compile(dialect=dialect)
        order = tuple(compiled.positiontup or ())
        if sorted(order) != sorted(names):
            raise StorageError(f"internal error: unexpected parameters in the insert into {self.describe()}")
        types = [self._types[name] for name in order]
        processors = {i: t.process for i, t in enumerate(types) if t.process is not None}
        columns = {i: t.column for i, t in enumerate(types) if t.column is not None and t.process is not None}
        plan = InsertPlan(compiled.string, order, processors, columns)
        self._plans[(table_name, names)] = plan
        return plan

    def _insert(self, conn: Connection, table_name: str, prepared: Prepared, batch: list[Row]) -> None:
        if not prepared.names:
            return
        plan = self._plan(table_name, prepared.names)
        params = prepared.params if prepared.params is not None else plan.params(batch)
        conn.exec_driver_sql(plan.sql, params)  # type: ignore[arg-type]
