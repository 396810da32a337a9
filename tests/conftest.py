"""Fixtures shared by every test: a private Redis per session, configs, apps, worker pools, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collector.config import Config
from tests.local_server import LocalServer

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("COLLECTOR_REQUIRE_SERVICES") == "1"
TEST_SECRET_KEY = "test-secret-key-for-this-session-only"


def service_missing(reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where COLLECTOR_REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (COLLECTOR_REQUIRE_SERVICES=1: services are required here)")
    pytest.skip(reason)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0, interval_s: float = 0.02, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(interval_s)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No COLLECTOR_* setting of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("COLLECTOR_") and name != "COLLECTOR_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _fresh_reach() -> Iterator[None]:
    """No test's data root or connections stay installed for the next one."""
    yield
    from collector.resources import reach

    reach.install(None)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """This test's data root (COLLECTOR_DATA_DIR of its configs): where its jobs read and write local files."""
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def data_root(data_dir: Path) -> Path:
    """`data_dir`, installed as this process's data root: for tests that build platforms and backends directly."""
    from collector.resources import reach

    reach.ensure(Config(data_dir=str(data_dir)))
    return data_dir


@pytest.fixture(autouse=True)
def _default_egress() -> Iterator[None]:
    """Each test starts under the default egress policy (nothing allowed), whatever an earlier one installed."""
    from collector import egress

    with egress.installed(egress.EgressPolicy()):
        yield


@pytest.fixture
def local_server(allow_loopback: None) -> Iterator[LocalServer]:
    """A local HTTP server (`tests/local_server.py`) that jobs run in this process may reach."""
    with LocalServer.serving() as server:
        yield server


@pytest.fixture
def allow_loopback() -> Iterator[None]:
    """Jobs run in this process may reach 127.0.0.1, as an operator allows with COLLECTOR_EGRESS_ALLOW=127.0.0.1."""
    from collector import egress

    with egress.installed(egress.EgressPolicy.from_config(Config(egress_allow="127.0.0.1"))):
        yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A private redis-server on a free port for the whole session (never the machine's shared one)."""
    from collector.cli.embedded import EmbeddedRedis
    from collector.errors import ConfigError

    server = EmbeddedRedis()
    try:
        server.start()
    except ConfigError as exc:
        service_missing(f"no Redis server to start: {exc.message}")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The private server's URL, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def config(redis_url: str, data_dir: Path) -> Config:
    return Config(redis_url=redis_url, secret_key=TEST_SECRET_KEY, progress_interval_s=0.05,
                  shutdown_grace_s=10.0, data_dir=str(data_dir))


def worker_env(config: Config, **extra: str) -> dict[str, str]:
    """The environment a worker or service subprocess gets for `config`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update({
        "COLLECTOR_REDIS_URL": config.redis_url or "",
        "COLLECTOR_SECRET_KEY": config.secret_key or "",
        "COLLECTOR_PROGRESS_INTERVAL_S": str(config.progress_interval_s),
        "COLLECTOR_SHUTDOWN_GRACE_S": str(config.shutdown_grace_s),
        "COLLECTOR_PLATFORMS_PACKAGE": config.platforms_package,
        "COLLECTOR_DATA_DIR": config.data_dir,
        "COLLECTOR_CONNECTIONS": config.connections or "",
        "PYTHONUNBUFFERED": "1",
    })
    if config.egress_allow:
        env["COLLECTOR_EGRESS_ALLOW"] = config.egress_allow
    env.update(extra)
    return env


class PoolProcess:
    """A `collector worker -n N` subprocess, its output in a log file."""

    def __init__(self, config: Config, size: int, log_path: Path, **env: str) -> None:
        self.config, self.size, self.log_path = config, size, log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "worker", "-n", str(size)],
            env=worker_env(config, **env), stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )

    def worker_names(self) -> list[str]:
        client = redis.Redis.from_url(self.config.redis_url or "")
        try:
            return sorted(k.decode().removeprefix("rq:worker:") for k in client.smembers("rq:workers"))
        finally:
            client.close()

    def wait_ready(self) -> PoolProcess:
        wait_for(lambda: len(self.worker_names()) >= self.size, what=f"{self.size} workers to register")
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_pool(config: Config, tmp_path: Path) -> Iterator[Callable[..., PoolProcess]]:
    pools: list[PoolProcess] = []

    def start(size: int = 2, config_: Config | None = None, **env: str) -> PoolProcess:
        pool = PoolProcess(config_ or config, size, tmp_path / f"pool-{len(pools)}.log", **env)
        pools.append(pool)
        return pool.wait_ready()

    yield start
    for pool in pools:
        pool.stop()


class ServedApp:
    """The API served over real HTTP from a thread, for the length of a test."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.request

        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        with contextlib.suppress(ValueError):
            return status, json.loads(payload)
        return status, payload.decode(errors="replace")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(config: Config) -> Iterator[ServedApp]:
    from collector.app import create_app

    served_app = ServedApp(create_app(config))
    yield served_app
    served_app.close()
