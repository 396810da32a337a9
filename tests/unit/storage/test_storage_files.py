"""The CSV and JSON Lines storage backends: values, header, modes, atomic replace."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.resources import reach
from storage import backends
from storage.files import CsvStorage, JsonlStorage

ROW: dict[str, Any] = {
    "id": 7,
    "ratio": 0.1 + 0.2,
    "price": decimal.Decimal("12345678901234.123456789012"),
    "flag": False,
    "day": dt.date(2024, 2, 29),
    "moment": dt.datetime(2024, 5, 31, 23, 59, 58, 123456, tzinfo=dt.UTC),
    "name": 'Zoë, "quoted"\nnew line',
    "meta": {"a": [1, {"b": None}]},
    "empty": None,
}


def read_csv(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file, delimiter=delimiter))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def relative(path: Path) -> str:
    """`path` as a spec names it: relative to the data root."""
    return os.path.relpath(path, reach.current().data_root.path)


def store(storage: CsvStorage | JsonlStorage, rows: Any) -> int:
    try:
        return storage.write(rows)
    finally:
        storage.close()


def failing_rows(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {"id": i, "name": "new"}
    raise RuntimeError("the source broke")


def test_backends_are_registered() -> None:
    assert backends()["csv"] is CsvStorage and backends()["jsonl"] is JsonlStorage


def test_csv_values_round_trip_as_text(data_root: Path) -> None:
    path = data_root / "out" / "rows.csv"
    assert store(CsvStorage(path=relative(path)), [ROW]) == 1
    (row,) = read_csv(path)
    assert int(row["id"]) == 7
    assert float(row["ratio"]) == 0.1 + 0.2
    assert decimal.Decimal(row["price"]) == ROW["price"]
    assert row["flag"] == "false"
    assert dt.date.fromisoformat(row["day"]) == ROW["day"]
    assert dt.datetime.fromisoformat(row["moment"]) == ROW["moment"]
    assert row["name"] == ROW["name"]
    assert json.loads(row["meta"]) == ROW["meta"]
    assert row["empty"] == ""


def test_csv_header_is_written_once_across_appends(data_root: Path) -> None:
    path = data_root / "rows.csv"
    storage = CsvStorage(path=relative(path), delimiter=";")
    reported: list[int] = []
    storage.bind(reported.append)
    store(storage, ({"id": i, "v": f"x{i}"} for i in range(1500)))
    store(CsvStorage(path=relative(path), delimiter=";"), [{"v": "last", "id": 9999}])   # other key order
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id;v" and lines.count("id;v") == 1
    assert lines[-1] == "9999;last"
    assert reported == [1000, 500]
    assert len(read_csv(path, ";")) == 1501


def test_csv_new_columns_widen_the_header_and_keep_every_value(data_root: Path) -> None:
    path = data_root / "rows.csv"
    store(CsvStorage(path=relative(path)), [{"id": 1, "a": "x"}])
    store(CsvStorage(path=relative(path)), [{"id": 2, "b": "y"}, {"id": 3, "a": "z", "c": 1}])
    assert read_csv(path) == [
        {"id": "1", "a": "x", "b": "", "c": ""},
        {"id": "2", "a": "", "b": "y", "c": ""},
        {"id": "3", "a": "z", "b": "", "c": "1"},
    ]


def test_csv_replace_swaps_the_file_and_keeps_its_permissions(data_root: Path) -> None:
    path = data_root / "rows.csv"
    store(CsvStorage(path=relative(path)), [{"id": 1, "old": "o"}])
    path.chmod(0o640)
    assert store(CsvStorage(path=relative(path), mode="replace"), [{"id": 2, "new": "n"}]) == 1
    assert read_csv(path) == [{"id": "2", "new": "n"}]
    assert path.stat().st_mode & 0o777 == 0o640
    assert os.listdir(data_root) == ["rows.csv"]         # no temporary file left behind


@pytest.mark.parametrize("cls", [CsvStorage, JsonlStorage])
def test_failed_replace_leaves_the_old_file(data_root: Path, cls: type[CsvStorage | JsonlStorage]) -> None:
    path = data_root / f"rows.{cls.TYPE}"
    store(cls(path=relative(path)), [{"id": 1, "name": "old"}])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="the source broke"):
        store(cls(path=relative(path), mode="replace"), failing_rows(2500))
    assert path.read_bytes() == before
    assert os.listdir(data_root) == [path.name]


@pytest.mark.parametrize("cls", [CsvStorage, JsonlStorage])
def test_replace_then_append_within_one_storage(data_root: Path, cls: type[CsvStorage | JsonlStorage]) -> None:
    path = data_root / f"rows.{cls.TYPE}"
    store(cls(path=relative(path)), [{"id": 0}])
    storage = cls(path=relative(path), mode="replace")
    try:
        storage.write([{"id": 1}])
        storage.write([{"id": 2}])
    finally:
        storage.close()
    reader = read_csv if cls is CsvStorage else read_jsonl
    assert [int(r["id"]) for r in reader(path)] == [1, 2]


def test_jsonl_values_round_trip(data_root: Path) -> None:
    path = data_root / "rows.jsonl"
    store(JsonlStorage(path=relative(path)), [ROW, {"id": 8, "extra": [1, 2]}])
    first, second = read_jsonl(path)
    assert first["id"] == 7 and first["ratio"] == 0.1 + 0.2 and first["flag"] is False
    assert decimal.Decimal(first["price"]) == ROW["price"]
    assert dt.date.fromisoformat(first["day"]) == ROW["day"]
    assert dt.datetime.fromisoformat(first["moment"]) == ROW["moment"]
    assert first["name"] == ROW["name"] and first["meta"] == ROW["meta"] and first["empty"] is None
    assert second == {"id": 8, "extra": [1, 2]}


def test_jsonl_appends(data_root: Path) -> None:
    path = data_root / "rows.jsonl"
    store(JsonlStorage(path=relative(path)), [{"id": 1}])
    assert store(JsonlStorage(path=relative(path), mode="append"), [{"id": 2}, {"id": 3}]) == 2
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_settings_are_checked_and_described(data_root: Path) -> None:
    with pytest.raises(ValueError, match="mode must be append or replace"):
        JsonlStorage(path="x.jsonl", mode="upsert")
    with pytest.raises(ValueError, match="delimiter must be one character"):
        CsvStorage(path="x.csv", delimiter=";;")
    assert CsvStorage(path="exports/x.csv").describe() == "csv file exports/x.csv"
