"""File storage backends: CSV and JSON Lines, appended to or replaced atomically."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import decimal
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import IO, Any, ClassVar, Literal

from collector.errors import StorageError
from collector.resources import reach
from collector.resources.dataroot import LocalFile
from storage.base import Row, Storage
from storage.sql import dump_json

FileMode = Literal["append", "replace"]
# Rows are flushed to the file and reported stored in chunks of this many.
CHUNK = 1000


def csv_value(value: Any) -> Any:
    """A cell: '' for None, true/false, ISO dates, exact decimals, JSON for lists and dicts."""
    if value is None:
        return ""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict | list | tuple):
        return dump_json(value)
    return str(value)


class FileStorage(Storage):
    """Shared by the file backends: the target file, the mode and the atomic replace.

    `path` is relative to the data root (COLLECTOR_DATA_DIR), or to the root of a `files` `connection`;
    it is checked when the spec is submitted and again, folder by folder without following a symlink, each
    time the file is opened. replace writes a temporary file next to the target and renames it over the
    target (atomic on POSIX within one file system), so readers see the old file or the new one; the first
    `write` of an instance replaces, later ones append, so a job may hand its rows over in several calls.
    """

    path: str
    mode: str
    connection: str | None
    KIND: ClassVar[str] = ""

    def _init_file(self, *, path: str, mode: str, connection: str | None) -> None:
        if mode not in ("append", "replace"):
            raise ValueError(f"mode must be append or replace, not {mode!r}")
        root = reach.connection(connection, kinds=("files",)) if connection is not None else None
        self.file = reach.local_file(path, connection=root, write=True)
        self.path, self.mode, self.connection = path, mode, connection
        self._replaced = False

    def describe(self) -> str:
        where = f" of connection {self.connection!r}" if self.connection else ""
        return f"{self.KIND} file {self.path}{where}"

    def _check(self) -> str:
        """The file could be written now (its folder there or creatable, the file a regular, writable one), found
        without writing or creating anything."""
        try:
            return self.file.check_writable()
        except PermissionError as exc:
            raise StorageError(f"cannot write to {self.describe()}: {exc}", details={"path": self.path}) from None

    def _error(self, doing: str, exc: BaseException) -> StorageError:
        message = f"could not write to {self.describe()} ({doing}): {exc}"
        return StorageError(message, details={"path": self.path})

    def _write(self, rows: Iterable[Row]) -> int:
        if self.mode == "append" or self._replaced:
            return self._write_to(self.file, rows, fresh=False)
        try:
            temporary = self.file.temporary_sibling()
        except OSError as exc:
            raise self._error("creating a temporary file beside it", exc) from exc
        try:
            count = self._write_to(temporary, rows, fresh=True, report=False)
            try:
                temporary.rename_over(self.file)
            except OSError as exc:
                raise self._error("replacing the file", exc) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.remove()
            raise
        self._replaced = True
        if count:
            self._written(count)
        return count

    def _write_to(self, target: LocalFile, rows: Iterable[Row], *, fresh: bool, report: bool = True) -> int:
        raise NotImplementedError

    @staticmethod
    def _chunks(rows: Iterable[Row]) -> Iterator[list[Row]]:
        iterator = iter(rows)
        while chunk := list(islice(iterator, CHUNK)):
            yield chunk


class CsvStorage(FileStorage):
    """Rows into a CSV file with a header line; columns first seen in later rows widen the header.

    A new column rewrites the file once with the wider header (earlier rows get empty cells), so no value
    is ever dropped; in append mode the header of the existing file is read and kept.
    """

    TYPE = "csv"
    KIND = "csv"

    def __init__(
        self, *, path: str, delimiter: str = ",", mode: FileMode = "append", connection: str | None = None
    ) -> None:
        if len(delimiter) != 1:
            raise ValueError("delimiter must be one character")
        self._init_file(path=path, mode=mode, connection=connection)
        self.delimiter = delimiter

    def _read_header(self, target: LocalFile) -> list[str]:
        try:
            with target.open("r", newline="") as file:
                return next(csv.reader(file, delimiter=self.delimiter), [])
        except FileNotFoundError:
            return []

    def _write_to(self, target: LocalFile, rows: Iterable[Row], *, fresh: bool, report: bool = True) -> int:
        try:
            header = [] if fresh else self._read_header(target)
            known = set(header)
            total = 0
            file: IO[str] = target.open("w" if fresh else "a", newline="")
            try:
                for chunk in self._chunks(rows):
                    new = [k for row in chunk for k in row if k not in known]
                    if new:
                        new = list(dict.fromkeys(new))
                        file.close()
                        self._widen(target, header, new, has_header=bool(header))
                        header += new
                        known.update(new)
                        file = target.open("a", newline="")
                    writer = csv.writer(file, delimiter=self.delimiter)
                    writer.writerows([csv_value(row.get(column)) for column in header] for row in chunk)
                    file.flush()
                    total += len(chunk)
                    if report:
                        self._written(len(chunk))
            finally:
                file.close()
        except OSError as exc:
            raise self._error("writing", exc) from exc
        return total

    def _widen(self, target: LocalFile, header: list[str], new: list[str], *, has_header: bool) -> None:
        """Rewrite `target` with `new` columns added to its header (atomically, via a temporary file)."""
        with target.replacing(newline="") as out:
            writer = csv.writer(out, delimiter=self.delimiter)
            writer.writerow(header + new)
            if has_header:
                with target.open("r", newline="") as source:
                    reader = csv.reader(source, delimiter=self.delimiter)
                    next(reader, None)
                    writer.writerows(line + [""] * len(new) for line in reader)


class JsonlStorage(FileStorage):
    """Rows into a JSON Lines file: one JSON object per line, dates as ISO strings, decimals as strings."""

    TYPE = "jsonl"
    KIND = "jsonl"

    def __init__(self, *, path: str, mode: FileMode = "append", connection: str | None = None) -> None:
        self._init_file(path=path, mode=mode, connection=connection)

    def _write_to(self, target: LocalFile, rows: Iterable[Row], *, fresh: bool, report: bool = True) -> int:
        total = 0
        try:
            with target.open("w" if fresh else "a") as file:
                for chunk in self._chunks(rows):
                    file.write("".join(dump_json(dict(row)) + "\n" for row in chunk))
                    file.flush()
                    total += len(chunk)
                    if report:
                        self._written(len(chunk))
        except (OSError, TypeError, ValueError) as exc:
            raise self._error("writing", exc) from exc
        return total


__all__ = ["CsvStorage", "FileStorage", "JsonlStorage", "csv_value"]
