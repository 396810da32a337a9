"""Secrets a source echoes back, through the API and a real worker pool: nowhere in Redis, the API or the log."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from collector.config import Config
from collector.testkit import redis_contents
from tests.conftest import PoolProcess, ServedApp, wait_for

API_KEY = "echo-api-key-7a6b5c4d3e2f"
HEADER_TOKEN = "echo-hdr-tok-0f9e8d7c6b"
# The worker environment of these tests, in one place (the egress allow-list comes with `config`).
WORKER_ENV: dict[str, str] = {}


@pytest.fixture
def config(config: Config) -> Config:
    """The API and workers of these tests reach the echo server on 127.0.0.1, as an operator allows them to."""
    return dataclasses.replace(config, egress_allow="127.0.0.1")


class EchoServer:
    """An API on 127.0.0.1 that answers with the Authorization header and the API key it was sent: as a value,
    as a key, inside JSON text. Its first `failures` answers are 503s quoting them too."""

    def __init__(self, failures: int = 2) -> None:
        self.seen: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sent = {"authorization": self.headers.get("Authorization", ""),
                        "x-api-key": self.headers.get("X-Api-Key", "")}
                server.seen.append(sent)
                echo = {"auth": sent["authorization"], "key": sent["x-api-key"],
                        "by_key": {sent["x-api-key"]: "the key as a key"}, "as_text": json.dumps(sent)}
                status = 503 if len(server.seen) <= failures else 200
                body = json.dumps({"error": "busy", **echo} if status == 503 else {"items": [echo]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/items"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def test_secrets_echoed_by_the_source_are_nowhere_in_redis_the_api_or_the_log(
    served: ServedApp, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis, echo_server: EchoServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = start_pool(1, **WORKER_ENV)
    spec = {"platform_id": "http_json", "retry": {"max": 2, "backoff": 0}, "settings": {
        "url": echo_server.url, "record_path": "items", "max_retries": 1, "backoff_s": 0,
        "headers": {"Authorization": f"Bearer {HEADER_TOKEN}", "X-Api-Key": API_KEY}}}
    with caplog.at_level(logging.INFO):
        status, answer = served.request("POST", "/execution/run", spec)
        assert status == 202, answer
        job_id = answer["job_id"]
        record = wait_for(lambda: (r := served.request("GET", f"/execution/get?job_id={job_id}&full")[1])["status"]
                          in ("finished", "failed") and r, timeout_s=60, what="the job to end")
        _, events = served.request("GET", f"/execution/events?job_id={job_id}")
    assert record["status"] == "finished", record.get("error")
    # The source got the real credentials, on both attempts (a retry of the job, and one inside the client).
    assert len(echo_server.seen) == 3
    assert echo_server.seen[-1] == {"authorization": f"Bearer {HEADER_TOKEN}", "x-api-key": API_KEY}
    assert record["settings"]["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
    assert record["datasets"]["processed"] == [{"auth": "***", "key": "***", "by_key.***": "the key as a key",
                                                "as_text": '{"authorization": "***", "x-api-key": "***"}'}]
    retry = next(e for e in events if e["type"] == "retry_scheduled")
    assert "HTTP 503" in retry["error"]["message"] and "***" in retry["error"]["message"]
    assert record["attempt"] == 2
    pool.stop()
    keys = {key.decode() for key in redis_client.keys("*")}
    assert f"rq:job:{job_id}" in keys and f"collector:job:{job_id}:dataset:original" in keys
    everything = {
        "redis": redis_contents(redis_client).decode("utf-8", "replace"),
        "record": json.dumps(record),
        "events": json.dumps(events),
        "pool log": pool.output(),
        "api log": "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records),
    }
    assert "answered HTTP 503" in everything["pool log"]  # the log does tell what happened, masked
    for where, text in everything.items():
        for secret in (API_KEY, HEADER_TOKEN):
            assert secret not in text, f"{secret} is in the {where}"
