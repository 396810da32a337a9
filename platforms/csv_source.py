"""Rows of a CSV file, read from a local path or an HTTP(S) URL, with typed columns."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import itertools
import re
from collections.abc import Callable, Iterable
from typing import Any

from collector import egress
from collector.http_client import HttpClient
from collector.incremental import Incremental
from collector.masking import mask_secret_bytes, mask_secrets, mask_text
from collector.platform import FatalError, Platform, SettingError, Storage
from collector.resources import reach

TRUE = frozenset({"true", "t", "yes", "y", "1"})
FALSE = frozenset({"false", "f", "no", "n", "0"})
INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")            # "007" stays text: codes and zip codes keep their zeros
FLOAT = re.compile(r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.*")


def to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"{text!r} is not a bool; use true/false, yes/no or 1/0")


def to_datetime(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.strip())


# What each `types` name converts a non-empty cell with; an empty cell is None in every typed column.
CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": lambda text: int(text.strip()),
    "float": lambda text: float(text.strip()),
    "bool": to_bool,
    "date": lambda text: dt.date.fromisoformat(text.strip()),
    "datetime": to_datetime,
    "str": str,
}

# Inference tries these in order; a column takes the first every non-empty cell fits (int before float, so a
# column of whole numbers is int; date before datetime). Only unambiguous spellings are inferred.
GUESSES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("bool", lambda text: text.strip().lower() in ("true", "false")),
    ("int", lambda text: INT.fullmatch(text.strip()) is not None),
    ("float", lambda text: FLOAT.fullmatch(text.strip()) is not None),
    ("date", lambda text: DATE.fullmatch(text.strip()) is not None and _parses(dt.date.fromisoformat, text)),
    ("datetime", lambda text: DATETIME.fullmatch(text.strip()) is not None and _parses(to_datetime, text)),
)


def _parses(parse: Callable[[str], Any], text: str) -> bool:
    try:
        parse(text.strip())
    except ValueError:
        return False
    return True


def infer_type(values: Iterable[str]) -> str:
    """The narrowest type name every non-empty value fits; `str` when none does or all are empty."""
    candidates = list(GUESSES)
    seen = False
    for value in values:
        if value == "" or value.isspace():
            continue
        seen = True
        candidates = [(name, fits) for name, fits in candidates if fits(value)]
        if not candidates:
            return "str"
    return candidates[0][0] if seen else "str"


class CsvSource(Platform):
    """Rows of a CSV file from `path` or `url` (http/https): give exactly one.

    `path` is relative to the worker's data root (COLLECTOR_DATA_DIR), or to the root of a `files` connection
    named by `connection`; with an `http` connection, `url` is relative to its base URL (empty: the base itself),
    and the connection's headers and credentials are sent with it.

    `skip_rows` lines are skipped before the header. Without a header (`has_header: false`) columns are named
    by `columns`, or `column_1`, `column_2`, ...; with one, `columns` renames them. `types` maps a column to
    int, float, bool, date, datetime or str; other columns are inferred when `infer_types` is on (whole numbers
    without leading zeros, decimals, true/false, ISO dates and datetimes) and kept as text when it is off.
    Empty cells of typed columns become null. Datasets: `original` has the cells as read (text), `processed`
    the typed rows, which also go to `storage` when one is given. The whole file is held in memory.

    Incremental mode: with `cursor_field` (a column, compared by its type: numbers, dates and datetimes as such,
    text as text), a run keeps only the rows whose cursor is newer than the newest the last finished run of the
    spec's `state_key` (or schedule) saw, else than `cursor_start`, and saves the newest it saw.
    """

    CHUNK_ROWS = 5000   # rows handed to storage per write

    def __init__(
        self,
        path: str | None = None,
        url: str | None = None,
        connection: str | None = None,
        delimiter: str = ",",
        encoding: str = "utf-8",
        has_header: bool = True,
        columns: list[str] | None = None,
        skip_rows: int = 0,
        types: dict | None = None,
        infer_types: bool = True,
        timeout_s: float = 30.0,
        cursor_field: str | None = None,
        cursor_start: str | None = None,
        storage: Storage | None = None,
    ) -> None:
        if cursor_start is not None and not cursor_field:
            raise SettingError("cursor_field", "cursor_start needs cursor_field, the column that orders the rows "
                                               "(e.g. updated_at)")
        self.cursor_field, self.cursor_start = cursor_field, cursor_start
        self.named = reach.connection(connection, kinds=("files", "http")) if connection is not None else None
        if self.named is not None and self.named.kind == "http":
            if path is not None:
                raise SettingError("path", f"connection {connection!r} is an http connection: give url (relative "
                                           "to its base URL), not path")
            url = self.named.url_for(url, setting="url")
        elif self.named is not None and url is not None:
            raise SettingError("url", f"connection {connection!r} is a files connection: give path, not url")
        elif (path is None) == (url is None):
            raise ValueError("give exactly one of path (under the data root) or url (http:// or https://)")
        elif url is not None and not url.startswith(("http://", "https://")):
            raise SettingError("url", f"url {mask_text(url)!r} must start with http:// or https://")
        if url is not None and self.named is None:  # a connection's own host is the operator's choice
            egress.current().check_url(url, setting="url")
        if len(delimiter) != 1:
            raise ValueError(f"delimiter {delimiter!r} must be one character (use \"\\t\" for tabs)")
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"encoding {encoding!r} is unknown; use e.g. utf-8, latin-1 or cp1252") from None
        if self.named is not None and self.named.kind == "http" and not ascii_compatible(encoding):
            # The connection's credentials are masked out of what it answers by their spelling in ASCII: an
            # encoding that spells ASCII otherwise (UTF-16, EBCDIC, UTF-7) would let them through re-encoded.
            raise SettingError("encoding", f"encoding {encoding!r} does not read ASCII as ASCII; an http "
                                           "connection's answer is read in utf-8, latin-1, cp1252 or the like")
        if skip_rows < 0:
            raise ValueError(f"skip_rows={skip_rows} is negative; give 0 or more")
        if columns is not None and len(set(columns)) != len(columns):
            raise ValueError("columns repeats a name; give each column its own name")
        wrong = {c: t for c, t in (types or {}).items() if t not in CONVERTERS}
        if wrong:
            raise ValueError(f"types {wrong} are not types; use one of {sorted(CONVERTERS)}")
        self.file = reach.local_file(path, connection=self.named) if path is not None else None
        self.path, self.url, self.delimiter, self.encoding = path, url, delimiter, encoding
        self.has_header, self.columns, self.skip_rows = has_header, columns, skip_rows
        self.types, self.infer_types, self.timeout_s = dict(types or {}), infer_types, timeout_s
        self.storage = storage

    def _run(self, ctx):
        names, cells = self._read(ctx)
        original = [dict(zip(names, line, strict=True)) for line in cells]
        ctx.dataset("original", original)
        unknown = sorted(set(self.types) - set(names))
        if unknown:
            raise FatalError(f"types names column(s) {unknown} the file does not have; its columns are {names}")
        column_types = {
            name: self.types.get(name) or (infer_type(r[name] for r in original) if self.infer_types else "str")
            for name in names
        }
        processed = [self._convert(number, row, column_types) for number, row in enumerate(original, start=1)]
        incremental = None
        if self.cursor_field:
            if self.cursor_field not in names:
                raise FatalError(f"cursor_field {self.cursor_field!r} is not a column; the columns are {names}")
            incremental = Incremental(self.cursor_field, start=self.cursor_start, saved=ctx.saved_state)
            new = [n for n, row in enumerate(processed) if incremental.is_new(row[self.cursor_field])]
            original, processed = [original[n] for n in new], [processed[n] for n in new]
            ctx.dataset("original", original)
        ctx.dataset("processed", processed)
        total = len(processed)
        for start in range(0, total, self.CHUNK_ROWS):
            if self.storage is not None:
                self.storage.write(processed[start:start + self.CHUNK_ROWS])
            done = min(start + self.CHUNK_ROWS, total)
            ctx.progress(done, total, f"{done} of {total} rows")
        summary: dict[str, Any] = {"rows": total, "columns": len(names), "types": column_types}
        if self.storage is not None:
            summary["stored"] = self.storage.rows_written
        if incremental is not None:
            ctx.save_state(incremental.state())
            summary["incremental"] = incremental.summary()
        return summary

    def _check(self) -> str:
        """A `path`: the file is there and its first line reads in `encoding`. A `url`: one GET through the egress
        policy (with the connection's credentials), the body left unread."""
        if self.file is None:
            return self._client(on_retry=None).probe(str(self.url))
        try:
            with self.file.open("r", encoding=self._codec(), newline="") as file:
                file.readline()
        except FileNotFoundError:
            raise FatalError(f"no file at path {self.path!r} on this worker; check the path") from None
        except UnicodeDecodeError as exc:
            raise FatalError(f"{self.path} is not {self.encoding} ({exc.reason} at byte {exc.start}); "
                             "set encoding (e.g. latin-1)") from None
        except OSError as exc:
            raise FatalError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return f"{self.file.display} is there and readable"

    def _client(self, *, on_retry: Callable[[str], None] | None) -> HttpClient:
        accept = {"Accept": "text/csv, */*"}
        if self.named is not None:
            return self.named.http_client(headers=accept, timeout_s=self.timeout_s, on_retry=on_retry)
        return HttpClient(headers=accept, secrets=[], timeout_s=self.timeout_s, on_retry=on_retry)

    def _read(self, ctx) -> tuple[list[str], list[list[str]]]:
        """Column names and the data lines (each padded to the width of the header)."""
        source = self.path if self.path is not None else mask_text(str(self.url))
        try:
            if self.file is not None:
                with self.file.open("r", encoding=self._codec(), newline="") as file:
                    lines = list(csv.reader(itertools.islice(file, self.skip_rows, None), delimiter=self.delimiter))
            else:
                raw, _ = self._client(on_retry=ctx.log.warning).request(str(self.url))
                # Credentials a server echoes are masked before the text is split into cells, which could part them,
                # and before the bytes are decoded, which could respell them.
                secrets = self.named.secrets if self.named is not None else ()
                text = io.StringIO(mask_secrets(mask_secret_bytes(raw, secrets).decode(self._codec()), secrets),
                                   newline="")
                lines = list(csv.reader(itertools.islice(text, self.skip_rows, None), delimiter=self.delimiter))
        except FileNotFoundError:
            raise FatalError(f"no file at path {self.path!r} on this worker; check the path") from None
        except UnicodeDecodeError as exc:
            raise FatalError(f"{source} is not {self.encoding} ({exc.reason} at byte {exc.start}); "
                             "set encoding (e.g. latin-1)") from None
        except csv.Error as exc:
            raise FatalError(f"{source} is not readable CSV: {exc}") from None
        except OSError as exc:
            raise FatalError(f"cannot read {source}: {exc.strerror or exc}") from None
        lines = [line for line in lines if line]     # blank lines carry no row
        if self.has_header:
            header, lines = (lines[0] if lines else []), lines[1:]
            names = self.columns if self.columns is not None else header
            if len(names) != len(header):
                raise FatalError(f"columns names {len(names)} columns but the header has {len(header)}: {header}")
            if len(set(names)) != len(names):
                raise FatalError(f"the header repeats a column name: {header}; rename them with columns")
        else:
            width = max((len(line) for line in lines), default=0)
            names = self.columns if self.columns is not None else [f"column_{n}" for n in range(1, width + 1)]
        width = len(names)
        for number, line in enumerate(lines, start=1):
            if len(line) > width:
                raise FatalError(f"data row {number} has {len(line)} fields but there are {width} columns: "
                                 f"{line[:width + 3]}; check delimiter and columns")
            line.extend([""] * (width - len(line)))
        return names, lines

    def _codec(self) -> str:
        # A UTF-8 file saved by a spreadsheet starts with a byte-order mark that would end up in the first name.
        return "utf-8-sig" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding

    @staticmethod
    def _convert(number: int, row: dict[str, str], column_types: dict[str, str]) -> dict[str, Any]:
        typed: dict[str, Any] = {}
        for name, text in row.items():
            kind = column_types[name]
            if kind == "str":
                typed[name] = text
            elif text == "" or text.isspace():
                typed[name] = None
            else:
                try:
                    typed[name] = CONVERTERS[kind](text)
                except ValueError:
                    raise FatalError(f"data row {number}, column {name!r}: {text!r} is not a {kind}; "
                                     "fix the file or the column's entry in types") from None
        return typed


# Encodings that read ASCII as ASCII and in which no byte joins the ASCII byte after it into another character
# (multi-byte ones such as Shift JIS and GBK do; ISO-2022 and UTF-7 switch by escapes): UTF-8 and single-byte ones.
ASCII_SAFE = re.compile(r"utf-8(-sig)?|ascii|iso8859-\d+|cp125\d|cp437|cp850|cp852|cp866|koi8-[ru]|mac-roman")


def ascii_compatible(encoding: str) -> bool:
    """Whether text in `encoding` spells every ASCII character as ASCII does, whatever comes before it."""
    try:
        return ASCII_SAFE.fullmatch(codecs.lookup(encoding).name) is not None
    except LookupError:
        return False
