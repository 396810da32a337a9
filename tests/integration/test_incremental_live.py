"""Incremental state with a real pool: two runs of one state_key, the second collects only newer rows (CSV file,
PostgreSQL and MariaDB tables, a local HTTP API); `DELETE /state` makes the next run start over."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.storage.conftest import database_name, mariadb_admin, postgres_admin
from tests.integration.test_cli_client import cli
from tests.local_server import LocalServer, Seen, json_answer

HEADERS = {"X-Requested-With": "test"}


@pytest.fixture
def live(config: Config) -> Config:
    """Workers and API that may reach this host's databases and HTTP server, as an operator allows them to."""
    return dataclasses.replace(config, egress_allow="127.0.0.1")


@pytest.fixture
def api(live: Config, start_pool: Callable[..., PoolProcess]) -> Iterator[ServedApp]:
    start_pool(2, live)
    served = ServedApp(create_app(live))
    yield served
    served.close()


def collect(api: ServedApp, platform_id: str, settings: dict[str, Any], key: str) -> dict[str, Any]:
    """Run one job of state key `key` through the pool; its full view once it finished."""
    status, answer = api.request("POST", "/execution/run",
                                 {"platform_id": platform_id, "state_key": key, "settings": settings})
    assert status == 202, answer

    def ended() -> dict[str, Any] | None:
        view = api.request("GET", f"/execution/get?job_id={answer['job_id']}&full")[1]
        return view if view["status"] in ("finished", "failed") else None

    view = wait_for(ended, timeout_s=30, what=f"{platform_id} job {answer['job_id']} to end")
    assert view["status"] == "finished", view.get("error")
    assert view["state_key"] == key
    return view


def two_runs_then_reset(api: ServedApp, platform_id: str, settings: dict[str, Any], *, key: str,
                        add_rows: Callable[[], None], ids: Callable[[dict[str, Any]], list[Any]]) -> None:
    """First run: ids 1 and 2. After `add_rows` (3 newer, 4 older): the second run collects 3 only. After a
    reset, a third run collects all four."""
    first = collect(api, platform_id, settings, key)
    assert sorted(ids(first)) == [1, 2]
    status, shown = api.request("GET", f"/state?key={key}")
    assert status == 200 and shown["states"][platform_id]["state"]["cursor_field"] == settings["cursor_field"]
    assert shown["states"][platform_id]["job_id"] == first["job_id"]
    add_rows()
    second = collect(api, platform_id, settings, key)
    assert ids(second) == [3], "only the row newer than the first run's newest"
    assert second["result"]["incremental"]["since"] == first["result"]["incremental"]["next"]
    status, reset = api.request("DELETE", f"/state?key={key}", headers=HEADERS)
    assert status == 200 and reset == {"key": key, "reset": [platform_id]}
    assert api.request("GET", f"/state?key={key}")[1]["states"] == {}
    assert sorted(ids(collect(api, platform_id, settings, key))) == [1, 2, 3, 4]


def test_csv_source_second_run_reads_only_newer_rows(api: ServedApp, live: Config) -> None:
    path = Path(live.data_dir) / "orders.csv"
    path.write_text("id,updated_at\n1,2024-05-01T10:00:00\n2,2024-05-02T10:00:00\n")

    def add_rows() -> None:
        path.write_text(path.read_text() + "3,2024-05-03T10:00:00\n4,2024-04-01T00:00:00\n")

    two_runs_then_reset(api, "csv_source", {"path": "orders.csv", "cursor_field": "updated_at"}, key="csv-live",
                        add_rows=add_rows, ids=lambda view: [r["id"] for r in view["datasets"]["processed"]])


@pytest.fixture(params=["postgresql", "mariadb"])
def table(request: pytest.FixtureRequest) -> Iterator[tuple[str, Callable[[str], None]]]:
    """A fresh database of each server with an `orders` table (a timestamp cursor); its URL and a statement
    runner. The database is dropped afterwards."""
    name = database_name()
    if request.param == "postgresql":
        admin = postgres_admin()
        admin.execute(f'CREATE DATABASE "{name}"')
        import psycopg

        db = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=name, autocommit=True)
        run: Callable[[str], Any] = db.execute
        url, kind = f"postgresql://postgres@127.0.0.1:5432/{name}", "TIMESTAMPTZ"
    else:
        admin = mariadb_admin()
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
        import pymysql

        db = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=name, autocommit=True)
        run = db.cursor().execute
        url, kind = f"mysql://root@127.0.0.1:3306/{name}", "DATETIME"
    try:
        run(f"CREATE TABLE orders (id INTEGER PRIMARY KEY, updated_at {kind} NOT NULL)")
        run("INSERT INTO orders VALUES (1, '2024-05-01 10:00:00'), (2, '2024-05-02 10:00:00')")
        yield url, run
    finally:
        db.close()
        if request.param == "postgresql":
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def test_sql_query_second_run_reads_only_newer_rows(api: ServedApp, table: tuple[str, Callable[[str], None]]
                                                    ) -> None:
    url, run = table

    def add_rows() -> None:
        run("INSERT INTO orders VALUES (3, '2024-05-03 10:00:00'), (4, '2024-04-01 00:00:00')")

    settings = {"url": url, "query": "SELECT id, updated_at FROM orders", "cursor_field": "updated_at"}
    two_runs_then_reset(api, "sql_query", settings, key="sql-live", add_rows=add_rows,
                        ids=lambda view: [r["id"] for r in view["datasets"]["processed"]])
    started = collect(api, "sql_query", {**settings, "cursor_start": "2024-05-02 00:00:00"}, "sql-start")
    assert sorted(r["id"] for r in started["datasets"]["processed"]) == [2, 3], "text the server converts"


@pytest.fixture
def feed() -> Iterator[tuple[LocalServer, list[dict[str, Any]]]]:
    records: list[dict[str, Any]] = [{"id": 1, "updated": "2024-05-01T10:00:00Z"},
                                     {"id": 2, "updated": "2024-05-02T10:00:00Z"}]
    with LocalServer.serving() as server:
        server.route("/orders", lambda seen, calls: json_answer({"data": records}))
        yield server, records


def test_http_json_second_run_reads_only_newer_records(api: ServedApp, feed: tuple[LocalServer, list[Any]]) -> None:
    server, records = feed

    def add_rows() -> None:
        records.extend([{"id": 3, "updated": "2024-05-03T10:00:00Z"}, {"id": 4, "updated": "2024-04-01T00:00:00Z"}])

    settings = {"url": server.url("/orders"), "record_path": "data", "cursor_field": "updated",
                "since_param": "since"}
    two_runs_then_reset(api, "http_json", settings, key="http-live", add_rows=add_rows,
                        ids=lambda view: [r["id"] for r in view["datasets"]["processed"]])
    sent: list[Seen] = server.seen("/orders")
    assert "since" not in sent[0].query and sent[1].query["since"] == "2024-05-02T10:00:00Z"


def test_schedule_ticks_collect_each_row_once(live: Config, start_pool: Callable[..., PoolProcess],
                                              redis_client: redis.Redis) -> None:
    """A schedule's runs share its id as their state key: over many ticks, every row is collected exactly once."""
    path = Path(live.data_dir) / "feed.csv"
    path.write_text("id,updated_at\n1,2024-05-01T10:00:00\n2,2024-05-02T10:00:00\n")
    start_pool(1, live)  # one worker: the ticks' runs never overlap
    api = ServedApp(create_app(dataclasses.replace(live, schedule_min_interval_s=1)))
    try:
        status, created = api.request("POST", "/schedules", {"interval_s": 1, "spec": {
            "platform_id": "csv_source", "settings": {"path": "feed.csv", "cursor_field": "updated_at"}}})
        assert status == 201, created
        schedule_id = created["id"]
        wait_for(lambda: api.request("GET", f"/state?key={schedule_id}")[1]["states"], timeout_s=20,
                 what="the first tick's run to save its state")
        path.write_text(path.read_text() + "3,2024-05-03T10:00:00\n4,2024-04-01T00:00:00\n")
        runs = api.request("GET", f"/schedules/{schedule_id}")[1]["runs"]
        wait_for(lambda: api.request("GET", f"/schedules/{schedule_id}")[1]["runs"] >= runs + 2, timeout_s=20,
                 what="two more ticks")
        assert api.request("DELETE", f"/schedules/{schedule_id}", {})[0] == 200
        job_ids = [k.decode().split(":")[2] for k in redis_client.scan_iter(f"collector:job:{schedule_id}-*")
                   if k.count(b":") == 2]

        def views() -> list[dict[str, Any]] | None:
            found = [api.request("GET", f"/execution/get?job_id={job_id}&full")[1] for job_id in job_ids]
            return found if all(v["status"] == "finished" for v in found) else None

        finished = wait_for(views, timeout_s=20, what="every run of the schedule to finish")
        collected = sorted(row["id"] for view in finished for row in view["datasets"]["processed"])
        assert len(finished) >= 3 and collected == [1, 2, 3], "each row once, the older row 4 never"
        saved = api.request("GET", f"/state?key={schedule_id}")[1]["states"]["csv_source"]["state"]
        assert saved["cursor"] == "2024-05-03T10:00:00"
    finally:
        api.close()


def test_state_is_shown_and_reset_from_the_command_line(api: ServedApp, live: Config) -> None:
    (Path(live.data_dir) / "ids.csv").write_text("id\n1\n2\n")
    view = collect(api, "csv_source", {"path": "ids.csv", "cursor_field": "id"}, "cli-key")
    table = cli(api.url, "state", "show", "cli-key").stdout.splitlines()
    assert table[0].split() == ["PLATFORM", "SAVED", "AT", "BY", "JOB", "STATE"]
    assert table[1].startswith("csv_source") and view["job_id"] in table[1] and '"cursor": 2' in table[1]
    shown = json.loads(cli(api.url, "state", "show", "cli-key", "--platform", "csv_source", "--json").stdout)
    assert shown["states"]["csv_source"]["state"]["cursor"] == 2
    reset = cli(api.url, "state", "reset", "cli-key")
    assert reset.returncode == 0 and "state key 'cli-key' reset for csv_source" in reset.stdout
    assert cli(api.url, "state", "show", "cli-key").stdout.strip() == "no state saved for key 'cli-key'"
    refused = cli(api.url, "state", "show", "not a key")
    assert refused.returncode == 2 and "is not a state key" in refused.stderr
