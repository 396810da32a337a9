"""The base class every storage backend extends; its `__init__` parameters are its settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

Row = Mapping[str, Any]


class Storage:
    """Where collected rows go. Subclasses declare settings as annotated `__init__` parameters.

    `__init__` only stores settings: connections are opened on first use, inside the worker process
    that runs the job (after the fork). A backend implements `_write`, which returns how many rows it stored and
    reports each committed batch through `_written`, which the run context turns into `stored_rows` on the job.
    Platforms call `write`, which hands `_write` the rows with the job's secret values masked.
    """

    TYPE: ClassVar[str] = ""          # the `type` a storage spec names this backend by

    rows_written: int = 0
    _on_written: Callable[[int], None] | None = None
    _masked: Callable[[Iterable[Row]], Iterable[Row]] | None = None

    def write(self, rows: Iterable[Row]) -> int:
        """Store `rows`; how many were stored. A value the job's source echoed back (a connection's token in a
        response, say) is stored masked, as the job's datasets show it."""
        return self._write(self._masked(rows) if self._masked is not None else rows)

    def _write(self, rows: Iterable[Row]) -> int:
        raise NotImplementedError(f"{type(self).__name__} does not implement _write(rows)")

    def close(self) -> None:
        """Release connections and files; called once the job has ended, however it ended."""

    def _check(self) -> str | None:
        """Test the connection and credentials without writing anything: return a short note when they work,
        raise with the reason when not. This default has nothing to test; backends that connect override it
        (`collector check` and `POST /platforms/check` report a backend that does not as "no check")."""
        return f"storage type {self.TYPE!r} has no connection check"

    def bind(self, on_written: Callable[[int], None],
             masked: Callable[[Iterable[Row]], Iterable[Row]] | None = None) -> None:
        """Called by the runner before the job starts: `on_written(n)` is told of each stored batch, and `masked`
        gives the rows `write` hands on with the job's secrets masked."""
        self._on_written = on_written
        self._masked = masked

    def _written(self, count: int) -> None:
        self.rows_written += count
        if self._on_written is not None:
            self._on_written(count)

    def describe(self) -> str:
        """A short, secret-free name for messages: `mysql table mac_publishers`."""
        return self.TYPE
