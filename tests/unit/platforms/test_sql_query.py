"""The sql_query platform on SQLite files: chunked streaming, flat memory, read-only, errors without secrets."""

from __future__ import annotations

import csv
import gc
import json
import logging
import os
import sqlite3
import tracemalloc
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from collector.config import Config
from collector.errors import FatalError, TransientError
from collector.resources import reach
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from collector.types import Secret
from platforms.sql_query import SqlQuery
from storage.base import Row, Storage
from tests.unit.conftest import SECRET_KEY as KEY


class RecordingContext:
    job_id = "test-job"

    def __init__(self) -> None:
        self.progress_calls: list[tuple[Any, ...]] = []
        self.datasets: dict[str, list[Any]] = {}
        self.secrets: list[str] = []
        self.log = logging.getLogger("tests.sql_query")

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        self.progress_calls.append((done, total, message))

    def dataset(self, name: str, rows: Any) -> None:
        self.datasets[name] = list(rows)

    def add_secrets(self, values: Iterable[str]) -> None:
        self.secrets.extend(values)


class CountingStorage(Storage):
    """Keeps only the size of each write, so it holds no rows itself."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def write(self, rows: Iterable[Row]) -> int:
        count = sum(1 for _ in rows)
        self.batches.append(count)
        self._written(count)
        return count


def make_db(path: Path, rows: int) -> str:
    """A SQLite file at `path` (under the data root) with `rows` events; returns its URL as a spec gives it."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, amount REAL, payload TEXT)")
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)",
                       ((n, "click" if n % 2 else "view", n / 4, "x" * 40) for n in range(1, rows + 1)))
        db.commit()
    return f"sqlite:///{os.path.relpath(path, reach.current().data_root.path)}"


def run(platform: SqlQuery) -> tuple[dict[str, Any], RecordingContext]:
    ctx = RecordingContext()
    return platform._run(ctx), ctx


def test_rows_arrive_in_chunks_and_each_chunk_is_stored(data_root: Path) -> None:
    storage = CountingStorage()
    result, ctx = run(SqlQuery(url=Secret(make_db(data_root / "s.db", 25)), query="SELECT * FROM events ORDER BY id",
                               chunk_size=10, storage=storage))
    assert result == {"rows": 25, "chunks": 3, "sample_rows": 25, "stored": 25}
    assert storage.batches == [10, 10, 5]
    assert ctx.progress_calls == [(10, None, "chunk 1, 10 rows"), (20, None, "chunk 2, 20 rows"),
                                  (25, None, "chunk 3, 25 rows")]
    assert ctx.datasets["processed"][0] == {"id": 1, "kind": "click", "amount": 0.25, "payload": "x" * 40}


def test_only_a_sample_is_kept_as_the_processed_dataset(data_root: Path) -> None:
    result, ctx = run(SqlQuery(url=Secret(make_db(data_root / "s.db", 250)), query="SELECT id FROM events",
                               chunk_size=64))
    assert result["rows"] == 250 and result["sample_rows"] == SqlQuery.SAMPLE_ROWS == 100
    assert [r["id"] for r in ctx.datasets["processed"]] == list(range(1, 101))


def test_params_are_bound_to_placeholders(data_root: Path) -> None:
    result, ctx = run(SqlQuery(url=Secret(make_db(data_root / "s.db", 10)),
                               query="SELECT id FROM events WHERE kind = :kind AND id > :after",
                               params={"kind": "view", "after": 4}))
    assert result["rows"] == 3 and [r["id"] for r in ctx.datasets["processed"]] == [6, 8, 10]


def peak_bytes(url: str, rows: int) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        result, _ = run(SqlQuery(url=Secret(url), query="SELECT * FROM events", chunk_size=5000,
                                 storage=CountingStorage()))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert result["rows"] == rows


def test_memory_stays_flat_however_many_rows_the_query_returns(data_root: Path) -> None:
    small = peak_bytes(make_db(data_root / "small.db", 20_000), 20_000)
    large = peak_bytes(make_db(data_root / "large.db", 200_000), 200_000)
    # Ten times the rows, about the same peak: one chunk (and the sample) at a time, never the whole result.
    assert large < small * 1.5, (small, large)


@pytest.mark.parametrize(
    "query",
    ["DELETE FROM events", "  -- a comment\n UPDATE events SET kind = 'x'", "DROP TABLE events",
     "SELECT 1; DROP TABLE events", "PRAGMA table_info(events)"],
)
def test_statements_other_than_a_single_select_are_refused(query: str) -> None:
    with pytest.raises(ValueError, match="SELECT"):
        SqlQuery(url=Secret("sqlite:///x.db"), query=query)


def test_comments_before_with_are_fine_and_a_write_behind_with_is_refused_by_the_database(data_root: Path) -> None:
    url = make_db(data_root / "s.db", 3)
    result, _ = run(SqlQuery(url=Secret(url), query="/* daily */ WITH c AS (SELECT id FROM events) SELECT * FROM c;"))
    assert result["rows"] == 3
    with pytest.raises(FatalError, match="readonly"):
        run(SqlQuery(url=Secret(url), query="WITH c AS (SELECT 1) DELETE FROM events"))
    with closing(sqlite3.connect(data_root / "s.db")) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (3,)


def test_a_missing_database_file_or_table_is_fatal(data_root: Path) -> None:
    with pytest.raises(FatalError, match="no SQLite database file"):
        run(SqlQuery(url=Secret("sqlite:///none.db"), query="SELECT 1"))
    assert not (data_root / "none.db").exists()
    with pytest.raises(FatalError, match="no such table: missing_table"):
        run(SqlQuery(url=Secret(make_db(data_root / "s.db", 1)), query="SELECT * FROM missing_table"))


def test_repeated_column_names_are_fatal_instead_of_silently_merged(data_root: Path) -> None:
    with pytest.raises(FatalError, match=r"\['id'\] more than once"):
        run(SqlQuery(url=Secret(make_db(data_root / "s.db", 2)), query="SELECT a.id, b.id FROM events a, events b"))


def test_an_unreachable_server_is_transient_and_its_password_is_never_shown(allow_loopback: None) -> None:
    platform = SqlQuery(url=Secret("postgresql://ann:hunter2-secret@127.0.0.1:1/db"), query="SELECT 1")
    with pytest.raises(TransientError) as caught:
        run(platform)
    assert "hunter2-secret" not in str(caught.value) and "127.0.0.1" in str(caught.value)


def test_a_url_that_is_not_a_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="not a SQLAlchemy database URL") as caught:
        SqlQuery(url=Secret("ann:hunter2-secret"), query="SELECT 1")
    assert "hunter2-secret" not in str(caught.value)


def test_a_job_streams_the_query_into_sqlite_storage(data_root: Path) -> None:
    source = make_db(data_root / "source.db", 1234)
    target = data_root / "target.db"
    fake, config = fakeredis.FakeRedis(), Config(secret_key=KEY, data_dir=str(data_root))
    try:
        registry = Registry.discover("platforms")
        job_id = Submitter(connection=fake, config=config, registry=registry).submit({
            "platform_id": "sql_query",
            "settings": {"url": source, "query": "SELECT id, kind, amount FROM events WHERE amount >= :low",
                         "params": {"low": 1}, "chunk_size": 500,
                         "storage": {"type": "sqlite", "settings": {"path": "target.db", "table": "copy"}}},
        })["job_id"]
        result = execute(job_id, Runtime(config, fake, registry))
        assert result == {"rows": 1231, "chunks": 3, "sample_rows": 100, "stored": 1231}
        view = JobStore(fake, config).view(job_id, full=True)
        assert view is not None and view["status"] == "finished" and view["stored_rows"] == 1231
        assert view["progress"]["done"] == 1231 and view["progress"]["message"] == "chunk 3, 1231 rows"
        assert len(view["datasets"]["processed"]) == 100 and "original" not in view["datasets"]
        assert view["settings"]["url"] == "***"
        with closing(sqlite3.connect(target)) as db:
            assert db.execute("SELECT count(*), min(id), sum(amount) FROM copy").fetchone() == (
                1231, 4, sum(n / 4 for n in range(4, 1235)))
    finally:
        fake.close()


def test_the_examples_chain_csv_into_sqlite_then_query_it(data_root: Path) -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    load_csv = json.loads((examples / "csv_source.json").read_text())
    query = json.loads((examples / "sql_query.json").read_text())
    # Both examples name their databases and outputs relative to the data root; the CSV comes from a connection.
    fake = fakeredis.FakeRedis()
    config = Config(secret_key=KEY, data_dir=str(data_root), connections=str(examples / "connections.toml"))
    try:
        registry = Registry.discover("platforms")
        submitter = Submitter(connection=fake, config=config, registry=registry)
        runtime = Runtime(config, fake, registry)
        execute(submitter.submit(load_csv)["job_id"], runtime)
        result = execute(submitter.submit(query)["job_id"], runtime)
        assert result["rows"] == result["stored"] >= 1
        with open(data_root / "revenue_by_country.csv", newline="") as file:
            lines = list(csv.DictReader(file))
        assert [(line["country"], line["publishers"]) for line in lines] == [
            ("NL", "1"), ("FR", "1"), ("DE", "1"), ("GB", "1")]
        assert len(lines) == result["rows"] and float(lines[0]["revenue"]) == 1502.75
    finally:
        fake.close()


def test_an_escaped_colon_is_a_literal_and_an_empty_result_reports_progress(data_root: Path) -> None:
    url = make_db(data_root / "s.db", 3)
    result, ctx = run(SqlQuery(url=Secret(url), query=r"SELECT '10\:30' AS at, id FROM events WHERE id = :id",
                               params={"id": 2}))
    assert result["rows"] == 1 and ctx.datasets["processed"] == [{"at": "10:30", "id": 2}]
    result, ctx = run(SqlQuery(url=Secret(url), query="SELECT id FROM events WHERE id > 99"))
    assert result == {"rows": 0, "chunks": 0, "sample_rows": 0}
    assert ctx.progress_calls == [(0, 0, "the query returned no rows")] and ctx.datasets["processed"] == []
