"""Connections and the data root with a real pool: the API and the workers load the same connections file."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collector.config import Config
from collector.sealing import Sealer
from tests.conftest import ROOT, TEST_SECRET_KEY, PoolProcess, ServedApp, wait_for, worker_env
from tests.integration.storage.conftest import database_name, postgres_admin
from tests.local_server import LocalServer, json_answer

# Secrets the operator gives the connections; looked for in everything Redis and the workers' log hold.
PG_PASSWORD = "live-pg-password-41c7"
API_TOKEN = "live-api-token-0f3e8b"
API_KEY = "live-api-key-99d2"


@pytest.fixture
def warehouse() -> Iterator[str]:
    """A fresh PostgreSQL database with a `sales` table; its URL without a password (the server trusts 127.0.0.1)."""
    admin = postgres_admin()
    name = database_name()
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=name, autocommit=True) as db:
            db.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, country TEXT, amount NUMERIC(10, 2))")
            db.execute("INSERT INTO sales VALUES (1, 'NL', 10.50), (2, 'FR', 3.25), (3, 'NL', 1.00)")
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def api_server() -> Iterator[LocalServer]:
    with LocalServer.serving() as server:
        yield server


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    found = {"archive": tmp_path / "archive", "exports": tmp_path / "exports"}
    for folder in found.values():
        folder.mkdir()
    (found["archive"] / "publishers.csv").write_text("id,name,revenue\n1,Acme,12.5\n2,Globex,3\n")
    return found


@pytest.fixture
def live(config: Config, tmp_path: Path, warehouse: str, api_server: LocalServer, folders: dict[str, Path]
         ) -> Config:
    """The config of API and pool: the connections file names a database (password from the environment), an
    HTTP API (a sealed token and a header from the environment) and two file roots."""
    token = Sealer(TEST_SECRET_KEY).seal(API_TOKEN)
    path = tmp_path / "connections.toml"
    path.write_text(f"""
[warehouse]
kind = "database"
url = "{warehouse}"
password = {{env = "WAREHOUSE_PASSWORD"}}

[partner]
kind = "http"
base_url = "{api_server.base}/api"
token = {{sealed = "{token}"}}
headers = {{X-Api-Key = {{env = "PARTNER_KEY"}}}}

[archive]
kind = "files"
root = "archive"
read_only = true

[exports]
kind = "files"
root = "{folders['exports']}"
""")
    return dataclasses.replace(config, connections=str(path), environ=ENVIRON)


ENVIRON = {"WAREHOUSE_PASSWORD": PG_PASSWORD, "PARTNER_KEY": API_KEY}


@pytest.fixture
def served_live(live: Config) -> Iterator[ServedApp]:
    from collector.app import create_app

    app = ServedApp(create_app(live))
    yield app
    app.close()


def run_to_end(served: ServedApp, spec: dict[str, Any]) -> dict[str, Any]:
    status, body = served.request("POST", "/execution/run", spec)
    assert status == 202, body
    job_id = body["job_id"]

    def ended() -> dict[str, Any] | None:
        record = served.request("GET", f"/execution/get?job_id={job_id}&full")[1]
        return record if record["status"] in ("finished", "failed") else None

    return wait_for(ended, timeout_s=60, interval_s=0.1, what=f"job {job_id} to end")


def kept(redis_url: str) -> bytes:
    client = redis.Redis.from_url(redis_url)
    try:
        return b"".join(client.dump(key) or b"" for key in client.keys("*"))
    finally:
        client.close()


def test_connections_end_to_end_with_a_real_pool(
    live: Config, served_live: ServedApp, start_pool: Callable[..., PoolProcess], api_server: LocalServer,
    folders: dict[str, Path], warehouse: str,
) -> None:
    pool = start_pool(2, live, **ENVIRON)
    status, listing = served_live.request("GET", "/platforms/get")
    assert status == 200 and listing["connections"] == [
        {"name": "archive", "kind": "files"}, {"name": "exports", "kind": "files"},
        {"name": "partner", "kind": "http"}, {"name": "warehouse", "kind": "database"}]
    shown = collector(["platforms", "--url", served_live.url], worker_env(live))
    assert "connections: archive (files), exports (files), partner (http), warehouse (database)" in shown.stdout

    # A database connection: read with sql_query, write back with the postgresql backend, both by name.
    record = run_to_end(served_live, {"platform_id": "sql_query", "settings": {
        "connection": "warehouse",
        "query": "SELECT country, sum(amount) AS amount FROM sales GROUP BY country ORDER BY country",
        "storage": {"type": "postgresql", "settings": {"connection": "warehouse", "table": "by_country"}}}})
    assert record["status"] == "finished", record.get("error")
    assert record["result"]["stored"] == 2 and record["settings"]["connection"] == "warehouse"
    import psycopg

    with psycopg.connect(warehouse) as db:
        assert db.execute("SELECT country, amount FROM by_country ORDER BY country").fetchall() == [
            ("FR", 3.25), ("NL", 11.5)]

    # A files connection read (read-only root) into a writable files connection.
    record = run_to_end(served_live, {"platform_id": "csv_source", "settings": {
        "connection": "archive", "path": "publishers.csv",
        "storage": {"type": "jsonl", "settings": {"connection": "exports", "path": "2024/publishers.jsonl"}}}})
    assert record["status"] == "finished", record.get("error")
    lines = (folders["exports"] / "2024" / "publishers.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["Acme", "Globex"]

    # An http connection: its token and header reach the API; the spec only names a path under the base.
    api_server.route("/api/items", lambda seen, n: json_answer({"items": [{"id": 1}, {"id": 2}]}))
    record = run_to_end(served_live, {"platform_id": "http_json", "settings": {
        "connection": "partner", "url": "items?since=2024", "record_path": "items",
        "storage": {"type": "csv", "settings": {"path": "items.csv"}}}})
    assert record["status"] == "finished", record.get("error")
    (seen,) = api_server.seen("/api/items")
    assert seen.headers["authorization"] == f"Bearer {API_TOKEN}" and seen.headers["x-api-key"] == API_KEY
    assert seen.query == {"since": "2024"}
    assert (Path(live.data_dir) / "items.csv").read_text().splitlines() == ["id", "1", "2"]

    for secret in (PG_PASSWORD, API_TOKEN, API_KEY):
        assert secret.encode() not in kept(live.redis_url or ""), secret
        assert secret not in pool.output(), secret


def test_a_refused_connection_or_path_is_a_422_and_nothing_is_queued(
    live: Config, served_live: ServedApp, redis_client: redis.Redis
) -> None:
    for settings, field in (
        ({"connection": "partner", "query": "SELECT 1"}, "settings.connection"),
        ({"url": "sqlite:////etc/collector.db", "query": "SELECT 1"}, "settings.url"),
        ({"connection": "warehouse", "query": "SELECT 1", "storage": {"type": "csv", "settings": {
            "connection": "archive", "path": "out.csv"}}}, "settings.storage.settings.path"),
    ):
        status, body = served_live.request("POST", "/execution/run", {"platform_id": "sql_query",
                                                                      "settings": settings})
        assert status == 422 and field in body["details"], body
    status, body = served_live.request("POST", "/execution/run", {"platform_id": "csv_source", "settings": {
        "path": "/proc/self/environ", "delimiter": "\u0000", "has_header": False}})
    assert status == 422 and "settings.path" in body["details"]
    assert redis_client.llen("rq:queue:collector") == 0


def test_a_symlink_planted_before_the_worker_runs_the_job_is_not_followed(
    config: Config, served: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    data = Path(config.data_dir)
    (data / "in.csv").write_text("a\n1\n")
    status, body = served.request("POST", "/execution/run", {"platform_id": "csv_source", "settings": {
        "path": "in.csv", "delimiter": "\u0000", "has_header": False}})
    assert status == 202
    (data / "in.csv").unlink()
    (data / "in.csv").symlink_to("/proc/self/environ")       # the worker's own environment, as in the attack
    start_pool(1)
    record = wait_for(lambda: (r := served.request("GET", f"/execution/get?job_id={body['job_id']}&full")[1])
                      ["status"] == "failed" and r, timeout_s=30, what="the job to fail")
    assert "symlink" in record["error"]["message"]
    assert record["datasets"] == {} and TEST_SECRET_KEY not in json.dumps(record)


def collector(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *command], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_bad_connections_file_or_data_root_stops_the_worker_and_the_api(config: Config, tmp_path: Path) -> None:
    bad = tmp_path / "connections.toml"
    bad.write_text('[warehouse]\nkind = "database"\nurl = "postgresql://collector:hunter2@db/warehouse"\n')
    env = worker_env(config, COLLECTOR_CONNECTIONS=str(bad))
    for command in (["worker", "-n", "1", "--burst"], ["serve", "--port", "0"]):
        done = collector(command, env)
        assert done.returncode == 2, (command, done.stderr)
        assert "connection 'warehouse'" in done.stderr and "password in plain text" in done.stderr
        assert "hunter2" not in done.stderr
    done = collector(["worker", "-n", "1", "--burst"], worker_env(config, COLLECTOR_DATA_DIR=str(ROOT)))
    assert done.returncode == 2 and "COLLECTOR_DATA_DIR" in done.stderr and "contains" in done.stderr
