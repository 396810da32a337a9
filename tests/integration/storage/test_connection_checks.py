"""The built-in platforms' and storage backends' connection checks test something: a real connection, log-in and
`SELECT 1` on MariaDB and PostgreSQL, a request to a local HTTP server, the files on disk; and say why they fail
(`collector check` exits 1, `POST /platforms/check` answers ok: false)."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.app import create_app
from collector.cli.embedded import free_port
from collector.config import Config
from collector.specs.registry import Registry
from collector.submit.checks import check_settings
from tests.conftest import PoolProcess, ServedApp
from tests.integration.storage.conftest import HOST, mariadb_admin
from tests.integration.test_devkit_run import collector

TOKEN = "s3cret-check-token-0123456789"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover("platforms")


def check(registry: Registry, platform_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    """`collector check`'s answer, in this process: the settings validated and built, every check run."""
    platform = registry.get(platform_id)
    assert platform is not None
    return check_settings(platform, {**platform.settings.defaults, **settings}, [])


def by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"].split(" (")[0]: entry for entry in answer["checks"]}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/private") and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, b'{"error": "who are you"}')
        elif self.path.startswith("/broken"):
            self._answer(503, b"down for maintenance")
        else:
            self._answer(200, b"a,b\n1,2\n" if self.path.endswith(".csv") else b'{"items": []}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------------------------ SQL databases


def test_sql_query_logs_in_and_runs_select_1_on_postgresql_and_mariadb(
    registry: Registry, postgres_url: str, mariadb_url: str
) -> None:
    for url in (postgres_url, mariadb_url):
        answer = check(registry, "sql_query", {"url": url, "query": "SELECT 1 AS one"})
        assert answer["ok"] is True, answer
        assert "ran SELECT 1" in by_name(answer)["platform sql_query"]["message"]


def test_sql_query_on_a_closed_port_or_with_a_wrong_password_fails_with_the_reason(
    registry: Registry, allow_loopback: None, mariadb_url: str
) -> None:
    closed = free_port()
    answer = check(registry, "sql_query", {"url": f"postgresql://postgres@{HOST}:{closed}/db", "query": "SELECT 1"})
    assert answer["ok"] is False
    message = by_name(answer)["platform sql_query"]["message"]
    assert f"connecting to the postgresql database 'db' at {HOST}:{closed} failed" in message
    assert "refused" in message.lower() or "connect" in message.lower()
    admin = mariadb_admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute("CREATE USER IF NOT EXISTS 'collector_check'@'%' IDENTIFIED BY 'right-password-1'")
        wrong = mariadb_url.replace("root@", "collector_check:wrong-password-2@")
        answer = check(registry, "sql_query", {"url": wrong, "query": "SELECT 1"})
    finally:
        with admin.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS 'collector_check'@'%'")
        admin.close()
    assert answer["ok"] is False
    message = by_name(answer)["platform sql_query"]["message"]
    assert "Access denied" in message and "wrong-password-2" not in json.dumps(answer)


def test_sql_storage_connects_without_writing_and_names_a_closed_port(
    registry: Registry, postgres_url: str, mariadb_url: str, data_root: Path
) -> None:
    (data_root / "in.csv").write_text("a\n1\n")
    for kind, url in (("postgresql", postgres_url), ("mysql", mariadb_url)):
        storage = {"type": kind, "settings": {"url": url, "table": "never_made"}}
        answer = check(registry, "csv_source", {"path": "in.csv", "storage": storage})
        assert answer["ok"] is True, answer
        assert "ran SELECT 1" in by_name(answer)["storage"]["message"]
    closed = free_port()
    storage = {"type": "postgresql", "settings": {"url": f"postgresql://postgres:pw-9137@{HOST}:{closed}/db",
                                                 "table": "t"}}
    answer = check(registry, "csv_source", {"path": "in.csv", "storage": storage})
    assert answer["ok"] is False
    entry = by_name(answer)["storage"]
    assert entry["ok"] is False and "could not connect to postgresql table t" in entry["message"]
    assert by_name(answer)["platform csv_source"]["ok"] is True
    assert "pw-9137" not in json.dumps(answer)


def test_sqlite_storage_and_sql_query_on_sqlite(registry: Registry, data_root: Path) -> None:
    (data_root / "in.csv").write_text("a\n1\n")
    storage = {"type": "sqlite", "settings": {"path": "out/rows.db", "table": "t"}}
    answer = check(registry, "csv_source", {"path": "in.csv", "storage": storage})
    assert answer["ok"] is True and "can be created" in by_name(answer)["storage"]["message"]
    assert not (data_root / "out").exists(), "a check creates nothing"
    answer = check(registry, "sql_query", {"url": "sqlite:///missing.db", "query": "SELECT 1"})
    assert answer["ok"] is False and "no SQLite database file" in answer["message"]


# ------------------------------------------------------------------------------------------------ HTTP and files


def test_http_json_reaches_the_url_and_says_when_the_token_is_refused(
    registry: Registry, allow_loopback: None, web: str
) -> None:
    answer = check(registry, "http_json", {"url": f"{web}/private/items", "token": TOKEN})
    assert answer["ok"] is True and "answered HTTP 200" in answer["message"]
    answer = check(registry, "http_json", {"url": f"{web}/private/items", "token": "wrong-token-0123456789"})
    assert answer["ok"] is False
    assert "HTTP 401" in answer["message"] and "check the token" in answer["message"]
    assert "wrong-token-0123456789" not in json.dumps(answer)
    answer = check(registry, "http_json", {"url": f"{web}/broken", "max_retries": 5, "backoff_s": 30})
    assert answer["ok"] is False and "HTTP 503" in answer["message"]  # once, no retries, no backoff
    answer = check(registry, "http_json", {"url": f"http://{HOST}:{free_port()}/"})
    assert answer["ok"] is False and "failed" in answer["message"]


def test_http_json_refused_by_the_egress_policy(registry: Registry, web: str) -> None:
    """A host name that resolves to loopback passes validation, and the check's request is refused by the egress
    policy (as the job's would be)."""
    answer = check(registry, "http_json", {"url": web.replace(HOST, "localhost") + "/items"})
    assert answer["ok"] is False and "EgressError" in answer["message"]


def test_csv_source_checks_its_file_or_its_url(registry: Registry, data_root: Path, allow_loopback: None,
                                               web: str) -> None:
    (data_root / "in.csv").write_text("a,b\n1,2\n")
    assert check(registry, "csv_source", {"path": "in.csv"})["ok"] is True
    answer = check(registry, "csv_source", {"path": "nope.csv"})
    assert answer["ok"] is False and "no file at path 'nope.csv'" in answer["message"]
    assert check(registry, "csv_source", {"url": f"{web}/rows.csv"})["ok"] is True
    answer = check(registry, "csv_source", {"url": f"{web}/private/rows.csv"})
    assert answer["ok"] is False and "HTTP 401" in answer["message"]


def test_file_storage_says_whether_it_could_write(registry: Registry, data_root: Path) -> None:
    (data_root / "in.csv").write_text("a\n1\n")
    (data_root / "taken").write_text("a file, not a folder")
    answer = check(registry, "csv_source", {"path": "in.csv",
                                            "storage": {"type": "jsonl", "settings": {"path": "exports/rows.jsonl"}}})
    assert answer["ok"] is True and "can be created" in by_name(answer)["storage"]["message"]
    answer = check(registry, "csv_source", {"path": "in.csv",
                                            "storage": {"type": "csv", "settings": {"path": "taken/rows.csv"}}})
    assert answer["ok"] is False and "'taken' is not a folder" in by_name(answer)["storage"]["message"]


# ------------------------------------------------------------------------------------------------ the two entries


def test_collector_check_exits_1_for_postgresql_on_a_closed_port() -> None:
    spec = {"platform_id": "sql_query",
            "settings": {"url": f"postgresql://postgres@{HOST}:{free_port()}/db", "query": "SELECT 1"}}
    done = collector("check", "-", stdin=json.dumps(spec), COLLECTOR_EGRESS_ALLOW=HOST)
    assert done.returncode == 1, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and "connecting to the postgresql database 'db'" in answer["message"]


def test_platforms_check_answers_ok_false_for_postgresql_on_a_closed_port(
    config: Config, start_pool: Callable[..., PoolProcess]
) -> None:
    config = dataclasses.replace(config, egress_allow=HOST, check_timeout_s=30)
    served = ServedApp(create_app(config))
    try:
        start_pool(1, config)
        spec = {"platform_id": "sql_query",
                "settings": {"url": f"postgresql://postgres@{HOST}:{free_port()}/db", "query": "SELECT 1"}}
        status, answer = served.request("POST", "/platforms/check", spec)
    finally:
        served.close()
    assert status == 200 and answer["ok"] is False
    assert "connecting to the postgresql database 'db'" in answer["message"]
