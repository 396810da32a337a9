"""Incremental mode of http_json, sql_query and csv_source, run by the runner on fakeredis: the next run of a
state key collects only rows newer than the last one saw."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from collector.config import Config
from collector.errors import JobFailedError, ValidationError
from collector.resources import reach
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.records import JobStore, Keys
from collector.store.state import States
from collector.submit.submitter import Submitter
from tests.local_server import LocalServer, Seen, json_answer
from tests.unit.conftest import SECRET_KEY as KEY


@pytest.fixture
def jobs(data_root: Path) -> Iterator[tuple[fakeredis.FakeRedis, Config, Registry]]:
    fake = fakeredis.FakeRedis()
    config = Config(secret_key=KEY, data_dir=str(data_root), egress_allow="127.0.0.1")
    yield fake, config, Registry.discover("platforms")
    fake.close()


def run(jobs: tuple[fakeredis.FakeRedis, Config, Registry], platform_id: str, settings: dict[str, Any],
        *, key: str = "inc") -> tuple[Any, dict[str, Any]]:
    """The result and the full view of one run of `settings` with state key `key`."""
    fake, config, registry = jobs
    job_id = Submitter(connection=fake, config=config, registry=registry).submit(
        {"platform_id": platform_id, "state_key": key, "settings": settings})["job_id"]
    result = execute(job_id, Runtime(config, fake, registry))
    view = JobStore(fake, config).view(job_id, full=True)
    assert view is not None and view["state_key"] == key
    return result, view


def saved(jobs: tuple[fakeredis.FakeRedis, Config, Registry], platform_id: str, key: str = "inc") -> Any:
    fake, config, _ = jobs
    entry = States(fake, Keys(config.key_prefix)).read(platform_id, key)
    return entry and entry["state"]


def test_csv_source_collects_only_rows_newer_than_the_last_run(jobs: Any, data_root: Path) -> None:
    path = data_root / "orders.csv"
    path.write_text("id,updated_at\n1,2024-05-01T10:00:00\n2,2024-05-02T10:00:00\n")
    settings = {"path": "orders.csv", "cursor_field": "updated_at"}
    result, view = run(jobs, "csv_source", settings)
    assert result["rows"] == 2 and [r["id"] for r in view["datasets"]["processed"]] == [1, 2]
    assert saved(jobs, "csv_source") == {"cursor_field": "updated_at", "cursor": "2024-05-02T10:00:00",
                                         "cursor_kind": "datetime"}
    path.write_text(path.read_text() + "3,2024-05-03T10:00:00\n4,2024-04-01T00:00:00\n")
    result, view = run(jobs, "csv_source", settings)
    assert result["rows"] == 1 and [r["id"] for r in view["datasets"]["processed"]] == [3]
    assert [r["id"] for r in view["datasets"]["original"]] == ["3"]
    assert result["incremental"] == {"cursor_field": "updated_at", "since": "2024-05-02T10:00:00",
                                     "next": "2024-05-03T10:00:00"}
    assert run(jobs, "csv_source", settings)[0]["rows"] == 0


def test_csv_source_starts_at_cursor_start_and_names_a_missing_column(jobs: Any, data_root: Path) -> None:
    (data_root / "n.csv").write_text("n\n1\n5\n9\n")
    result, _ = run(jobs, "csv_source", {"path": "n.csv", "cursor_field": "n", "cursor_start": "4"}, key="s")
    assert result["rows"] == 2
    with pytest.raises(JobFailedError, match=r"cursor_field 'm' is not a column; the columns are \['n'\]"):
        run(jobs, "csv_source", {"path": "n.csv", "cursor_field": "m"}, key="t")
    assert saved(jobs, "csv_source", "t") is None


def make_db(data_root: Path, rows: list[tuple[int, str]]) -> str:
    with closing(sqlite3.connect(data_root / "events.db")) as db:
        db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, \"seen at\" TEXT, kind TEXT)")
        db.executemany("INSERT INTO events (id, \"seen at\", kind) VALUES (?, ?, 'click')", rows)
        db.commit()
    return f"sqlite:///{os.path.relpath(data_root / 'events.db', reach.current().data_root.path)}"


def test_sql_query_binds_the_bookmark_and_collects_only_newer_rows(jobs: Any, data_root: Path) -> None:
    url = make_db(data_root, [(1, "2024-05-01"), (2, "2024-05-02")])
    settings = {"url": url, "query": "SELECT id, \"seen at\" AS seen_at FROM events -- all of them\n;",
                "cursor_field": "seen_at"}
    result, view = run(jobs, "sql_query", settings)
    assert result["rows"] == 2 and saved(jobs, "sql_query")["cursor"] == "2024-05-02"
    make_db(data_root, [(3, "2024-05-03"), (4, "2024-04-30")])
    result, view = run(jobs, "sql_query", settings)
    assert result["rows"] == 1 and view["datasets"]["processed"] == [{"id": 3, "seen_at": "2024-05-03"}]
    assert saved(jobs, "sql_query")["cursor"] == "2024-05-03"
    by_id = {**settings, "cursor_field": "id", "cursor_start": "2"}
    assert run(jobs, "sql_query", by_id, key="by-id")[0]["rows"] == 2
    assert saved(jobs, "sql_query", "by-id") == {"cursor_field": "id", "cursor": 4, "cursor_kind": "int"}


def test_sql_query_checks_the_cursor_column(jobs: Any, data_root: Path) -> None:
    url = make_db(data_root, [(1, "2024-05-01")])
    with pytest.raises(JobFailedError, match=r"cursor_field 'kind' is not a column of the query's result; its "
                                             r"columns are \['id'\]"):
        run(jobs, "sql_query", {"url": url, "query": "SELECT id FROM events", "cursor_field": "kind"})
    fake, config, registry = jobs
    submitter = Submitter(connection=fake, config=config, registry=registry)
    for bad in ("id > 0 OR 1", "x\"; DROP TABLE events; --", "1st"):
        with pytest.raises(ValidationError) as caught:
            submitter.submit({"platform_id": "sql_query", "state_key": "k", "settings": {
                "url": url, "query": "SELECT id FROM events", "cursor_field": bad}})
        assert "not a column name" in caught.value.details["settings.cursor_field"][0]
    with pytest.raises(ValidationError) as caught:
        submitter.submit({"platform_id": "sql_query", "settings": {
            "url": url, "query": "SELECT id FROM events WHERE id > :collector_cursor", "cursor_field": "id",
            "params": {"collector_cursor": 1}}})
    assert "settings.params" in caught.value.details


@pytest.fixture
def feed(local_server: LocalServer) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [{"id": 1, "meta": {"ts": 100}}, {"id": 2, "meta": {"ts": 200}}]

    def answer(seen: Seen, calls: int) -> Any:
        since = int(seen.query.get("since", 0))
        return json_answer({"items": [r for r in records if r["meta"]["ts"] > since]})

    local_server.route("/items", answer)
    return records


def test_http_json_keeps_newer_records_and_sends_the_bookmark(jobs: Any, local_server: LocalServer,
                                                              feed: list[dict[str, Any]]) -> None:
    settings = {"url": local_server.url("/items"), "record_path": "items", "cursor_field": "meta.ts"}
    result, view = run(jobs, "http_json", settings)
    assert result["records"] == 2 and saved(jobs, "http_json")["cursor"] == 200
    feed.append({"id": 3, "meta": {"ts": 300}})
    result, view = run(jobs, "http_json", settings)   # no since_param: the API answers all, filtered here
    assert result["records"] == 1 and view["datasets"]["processed"] == [{"id": 3, "meta.ts": 300}]
    feed.append({"id": 4, "meta": {"ts": 400}})
    result, _ = run(jobs, "http_json", {**settings, "since_param": "since"})
    assert result["records"] == 1 and local_server.seen("/items")[-1].query["since"] == "300"
    assert saved(jobs, "http_json")["cursor"] == 400


def test_http_json_names_a_record_without_the_cursor_field(jobs: Any, local_server: LocalServer,
                                                           feed: list[dict[str, Any]]) -> None:
    with pytest.raises(JobFailedError, match=r"a record has no field 'ts'.*fix cursor_field"):
        run(jobs, "http_json", {"url": local_server.url("/items"), "record_path": "items", "cursor_field": "ts"})
    fake, config, registry = jobs
    with pytest.raises(ValidationError) as caught:
        Submitter(connection=fake, config=config, registry=registry).submit({"platform_id": "http_json", "settings": {
            "url": local_server.url("/items"), "since_param": "since"}})
    assert "settings.cursor_field" in caught.value.details
