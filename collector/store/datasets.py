"""Datasets a job keeps: rows serialized one by one up to the caps, then cut into chunks a page can be read from."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any

SEPARATOR = b", "  # what `json.dumps` puts between list items, so the sizes match those of one dumped list
ENCODER = json.JSONEncoder(default=str)  # one for every row: `json.dumps(row, default=str)` builds one per call


@dataclasses.dataclass(frozen=True)
class KeptDataset:
    """The rows of one dataset that fit the caps, each as its JSON, and how many the platform gave in all."""

    rows: list[bytes]
    total_rows: int
    cut_by: str | None = None  # the cap that cut it short ("rows" or "bytes"); None when every row was kept

    @property
    def truncated(self) -> bool:
        return self.cut_by is not None

    @property
    def size(self) -> int:
        """Bytes of the kept rows as one JSON array."""
        return json_array_size(sum(len(row) for row in self.rows), len(self.rows))

    def summary(self) -> dict[str, Any]:
        """What the record says of it: `{"rows", "bytes"}`, plus `total_rows` and `truncated` when cut short."""
        summary: dict[str, Any] = {"rows": len(self.rows), "bytes": self.size}
        if self.truncated:
            summary.update(total_rows=self.total_rows, truncated=True)
        return summary

    def chunks(self, rows_per_chunk: int) -> list[bytes]:
        """The kept rows as JSON arrays of `rows_per_chunk` rows each (one empty array when there are none)."""
        if not self.rows:
            return [b"[]"]
        return [b"[" + SEPARATOR.join(self.rows[at:at + rows_per_chunk]) + b"]"
                for at in range(0, len(self.rows), rows_per_chunk)]


def json_array_size(row_bytes: int, rows: int) -> int:
    return 2 + row_bytes + len(SEPARATOR) * max(rows - 1, 0)


def keep_rows(rows: Iterable[Mapping[str, Any]], *, max_rows: int, max_bytes: int,
              mask: Callable[[str], str] | None = None) -> KeptDataset:
    """Serialize `rows` one at a time while they fit `max_rows` and `max_bytes` (of JSON); count the rest.
    Each row's JSON goes through `mask` (secret values out) before it is measured and kept.

    Rows past a cap are counted, never serialized, so a huge dataset costs neither Redis nor the worker's
    memory more than the caps."""
    kept: list[bytes] = []
    row_bytes = 0
    cut_by: str | None = None
    seen = 0
    iterator: Iterator[Mapping[str, Any]] = iter(rows)
    for row in iterator:
        seen += 1
        if len(kept) >= max_rows:
            cut_by = "rows"
            break
        text = ENCODER.encode(row)
        encoded = (mask(text) if mask is not None else text).encode()
        if json_array_size(row_bytes + len(encoded), len(kept) + 1) > max_bytes:
            cut_by = "bytes"
            break
        kept.append(encoded)
        row_bytes += len(encoded)
    if cut_by is not None:
        seen = len(rows) if isinstance(rows, Sized) else seen + sum(1 for _ in iterator)
    return KeptDataset(kept, seen, cut_by)


def masked(kept: KeptDataset, mask: Callable[[str], str]) -> KeptDataset:
    """`kept` with every row's JSON through `mask` (masking only shortens, so the caps still hold)."""
    return dataclasses.replace(kept, rows=[mask(row.decode()).encode() for row in kept.rows])


def cut_note(name: str, kept: KeptDataset, *, max_rows: int, max_bytes: int) -> str:
    """The log line of a dataset cut short: what was kept, which setting cut it, and where full results go."""
    limit = (f"COLLECTOR_DATASET_MAX_ROWS={max_rows}" if kept.cut_by == "rows"
             else f"COLLECTOR_DATASET_MAX_BYTES={max_bytes}")
    return (f"dataset {name!r} keeps its first {len(kept.rows)} of {kept.total_rows} rows ({limit}); the rest is "
            "not kept with the job: write full results to a storage target")


def page_of(chunks: Iterable[bytes | None], *, first_chunk: int, rows_per_chunk: int, offset: int,
            limit: int) -> list[Any]:
    """Rows `offset` to `offset + limit` out of the stored chunks `first_chunk`, `first_chunk + 1`, …"""
    rows: list[Any] = []
    skip = offset - first_chunk * rows_per_chunk
    for chunk in chunks:
        if chunk is None:
            break
        rows.extend(json.loads(chunk))
    return rows[skip:skip + limit]
