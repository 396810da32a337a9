"""`collector serve` on a production server: slow clients hold no thread and are cut off, bodies over the limit are
413 chunked or not, tokens in query strings never reach the log, and SIGTERM/SIGINT stop it promptly."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.cli.embedded import free_port
from collector.config import Config
from tests.conftest import ROOT, wait_for, worker_env

MAX_BODY = 100 * 1024
HEADER_TIMEOUT_S = 2.0


class Served:
    """A `collector serve` subprocess on 127.0.0.1, its output in a file."""

    def __init__(self, config: Config, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "serve.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve", "--port", str(self.port)],
            env=worker_env(config, **env), stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        wait_for(self.alive, timeout_s=30, interval_s=0.1, what="collector serve to answer")

    def alive(self) -> bool:
        try:
            return self.request("GET", "/system/alive")[0] == 200
        except OSError:
            assert self.process.poll() is None, self.output()
            return False

    def request(self, method: str, path: str, body: bytes | None = None, *, chunked: bool = False,
                headers: dict[str, str] | None = None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            payload = (body[i:i + 8192] for i in range(0, len(body), 8192)) if chunked and body else body
            connection.request(method, path, body=payload, headers=hdrs, encode_chunked=chunked)
            response = connection.getresponse()
            raw = response.read()
            try:
                return response.status, json.loads(raw)
            except ValueError:  # the dashboard's HTML, an empty body
                return response.status, {}
        finally:
            connection.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> float:
        """Seconds from the signal to the exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return time.monotonic() - started


@pytest.fixture
def served_process(config: Config, tmp_path: Path) -> Iterator[Served]:
    served = Served(config, tmp_path, COLLECTOR_MAX_BODY_BYTES=str(MAX_BODY),
                    COLLECTOR_HTTP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S))
    yield served
    served.stop()


class Slowloris:
    """`count` connections that send a request's headers a byte at a time, one byte per connection each 0.2 s."""

    HEAD = b"GET /system/alive HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 4096

    def __init__(self, port: int, count: int) -> None:
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
        for sock in self.socks:
            sock.send(self.HEAD[:1])
            sock.setblocking(False)
        self.closed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _dribble(self) -> None:
        offset = 1
        while not self._stop.wait(0.2):
            for index, sock in enumerate(self.socks):
                if index in self.closed:
                    continue
                try:
                    if sock.recv(1024) == b"":   # the server closed it
                        self.closed.add(index)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed.add(index)
                    continue
                with contextlib.suppress(OSError):
                    sock.send(self.HEAD[offset % len(self.HEAD):][:1])
            offset += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def test_300_slow_clients_do_not_delay_a_normal_request_and_are_closed_after_the_header_timeout(
    served_process: Served,
) -> None:
    attack = Slowloris(served_process.port, 300)
    try:
        time.sleep(0.5)  # every slow connection has dribbled a few more bytes; none is closed yet
        assert not attack.closed, "slow connections were closed before their header timeout"
        started = time.monotonic()
        status, body = served_process.request("GET", "/system/alive")
        took = time.monotonic() - started
        assert status == 200 and body["alive"] is True
        assert took < 5.0, f"a normal request took {took:.2f} s behind 300 slow ones (bench/http_server.py measures)"
        wait_for(lambda: len(attack.closed) == 300, timeout_s=HEADER_TIMEOUT_S + 10, interval_s=0.1,
                 what="the server to close every connection still sending headers after the header timeout")
    finally:
        attack.close()
    assert served_process.request("GET", "/system/alive")[0] == 200
    assert "whose request did not arrive in time" in served_process.output()


def run_body(size: int) -> bytes:
    """A valid job spec of `size` bytes (JSON allows any amount of whitespace)."""
    spec = json.dumps({"platform_id": "demo", "settings": {"rows": 1}}).encode()
    return spec + b" " * (size - len(spec))


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_the_limit_is_413_chunked_or_not(served_process: Served, chunked: bool) -> None:
    status, body = served_process.request("POST", "/execution/run", run_body(MAX_BODY + 1000), chunked=chunked)
    assert status == 413, body
    assert body["error"] == "request_entity_too_large" and "COLLECTOR_MAX_BODY_BYTES" in body["message"]
    status, body = served_process.request("POST", "/execution/run", run_body(MAX_BODY - 1000), chunked=chunked)
    assert status == 202, body


def test_a_lone_surrogate_is_a_json_400_over_http(served_process: Served) -> None:
    for path in ("/execution/run", "/schedules", "/process/run"):
        status, body = served_process.request("POST", path, b'{"_id": "\\ud800", "platform_id": "demo"}')
        assert status == 400 and "lone surrogate" in body["message"], (path, body)


def test_a_token_in_a_query_string_never_reaches_the_log(served_process: Served) -> None:
    secret = "query-token-0123456789abcdef"
    for path in (f"/system/alive?token={secret}", f"/execution/get?job_id=nope&token={secret}",
                 f"/rq/?api_key={secret}&access_token={secret}", f"/platforms/get?x=1&TOKEN={secret}"):
        served_process.request("GET", path)
    wait_for(lambda: "TOKEN=***" in served_process.output(), what="the access lines")
    output = served_process.output()
    assert secret not in output
    assert "/system/alive?token=***" in output and "job_id=nope&token=***" in output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_server_promptly_with_connections_open(config: Config, tmp_path: Path, sig: int) -> None:
    served = Served(config, tmp_path)
    attack = Slowloris(served.port, 20)
    idle = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)  # a kept-alive connection, idle
    idle.request("GET", "/system/alive")
    idle.getresponse().read()
    try:
        took = served.stop(sig)
    finally:
        attack.close()
        idle.close()
    assert served.process.returncode == 0, served.output()
    assert took < 10, f"the server took {took:.1f} s to stop"
    assert "API stopping" in served.output()


def test_headers_over_the_limit_and_requests_that_are_not_http_get_json_errors(served_process: Served) -> None:
    status, body = served_process.request("GET", "/system/alive", headers={"X-Big": "x" * 70_000})
    assert status == 431 and body["error"] == "request_header_fields_too_large", body
    with socket.create_connection(("127.0.0.1", served_process.port), timeout=5) as sock:
        sock.sendall(b"GET /system/alive HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after an error
            received += chunk
        answer = received.decode()
    assert answer.startswith("HTTP/1.1 400") and '"error": "bad_request"' in answer and "valid HTTP" in answer
