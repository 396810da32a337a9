"""Jobs from the API into real databases: http_json → MariaDB and PostgreSQL, with stored_rows on the record."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
import sqlalchemy as sa

from tests.conftest import PoolProcess, ServedApp, wait_for

PUBLISHERS = [{"id": n, "name": f"publisher {n}", "revenue": n * 1.5, "meta": {"tier": n % 3}} for n in range(1, 121)]


class PagedHandler(BaseHTTPRequestHandler):
    """Serves PUBLISHERS 50 per page at /publishers?page=N, wanting a bearer token."""

    token = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        page = int(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("page", ["1"])[0])
        body = json.dumps({"data": {"items": PUBLISHERS[(page - 1) * 50 : page * 50]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_url() -> Iterator[str]:
    PagedHandler.token = "tok-" + "x" * 20
    server = ThreadingHTTPServer(("127.0.0.1", 0), PagedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/publishers"
    server.shutdown()
    server.server_close()


def run_into(served: ServedApp, api_url: str, storage: dict) -> dict:
    status, body = served.request("POST", "/execution/run", {
        "_id": "publishers", "platform_id": "http_json",
        "settings": {"url": api_url, "token": PagedHandler.token, "record_path": "data.items",
                     "pagination": "page", "page_size": 50, "storage": storage},
    })
    assert status == 202, body
    return wait_for(lambda: (r := served.request("GET", f"/execution/get?job_id={body['job_id']}")[1])["status"]
                    in ("finished", "failed") and r, timeout_s=30, what="the job to end")


def rows_in(url: str, table: str) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))]
    finally:
        engine.dispose()


def test_http_json_into_mariadb_in_the_seed_spec_form(
    served: ServedApp, start_pool: Callable[..., PoolProcess], api_url: str, mariadb_url: str
) -> None:
    start_pool(1)
    db = sa.engine.make_url(mariadb_url).database
    record = run_into(served, api_url, {"type": "mysql", "settings": {
        "hostname": "127.0.0.1", "port": 3306, "db": db, "username": "root", "table": "mac_publishers"}})
    assert record["status"] == "finished", record.get("error")
    assert record["stored_rows"] == 120 and record["result"]["records"] == 120
    rows = rows_in(mariadb_url, "mac_publishers")
    assert len(rows) == 120
    assert rows[6]["name"] == "publisher 7" and rows[6]["revenue"] == pytest.approx(10.5)
    assert record["settings"]["token"] == "***"


def test_http_json_into_postgresql_keeps_the_password_sealed(
    served: ServedApp, start_pool: Callable[..., PoolProcess], api_url: str, postgres_url: str,
    redis_client: redis.Redis,
) -> None:
    start_pool(1)
    password = "canary-pw-" + "z" * 12  # PostgreSQL here trusts local users, so any password gets in
    db = sa.engine.make_url(postgres_url).database
    record = run_into(served, api_url, {"type": "postgresql", "settings": {
        "hostname": "127.0.0.1", "db": db, "username": "postgres", "password": password, "table": "publishers"}})
    assert record["status"] == "finished", record.get("error")
    assert record["stored_rows"] == 120
    assert record["settings"]["storage"]["settings"]["password"] == "***"
    assert len(rows_in(postgres_url, "publishers")) == 120
    for key in redis_client.scan_iter("*"):
        dump = redis_client.dump(key) or b""
        assert password.encode() not in dump and PagedHandler.token.encode() not in dump, key


def test_a_bad_storage_spec_is_a_422_with_its_path(served: ServedApp, redis_client: redis.Redis) -> None:
    status, body = served.request("POST", "/execution/run", {"platform_id": "http_json", "settings": {
        "url": "http://127.0.0.1:1/x", "storage": {"type": "mysql", "settings": {"table": "t", "port": "3306x"}}}})
    assert status == 422
    assert "settings.storage.settings.port" in body["details"]
    status, body = served.request("POST", "/execution/run", {"platform_id": "http_json", "settings": {
        "url": "http://127.0.0.1:1/x", "storage": {"type": "oracle", "settings": {}}}})
    assert status == 422 and "'mysql'" in body["details"]["settings.storage.type"][0]
    assert redis_client.dbsize() == 0
