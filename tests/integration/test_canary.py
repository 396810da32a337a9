"""A canary secret run through the real API and pool, to success and to failure, appears nowhere.

Scanned: every key and value in Redis (all types), every answer of the API, every dashboard page, and
every log line the API and the worker pool wrote (at DEBUG level).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from collector.cli.embedded import free_port
from collector.config import Config
from tests.conftest import ROOT, PoolProcess, ServedApp, wait_for, worker_env
from tests.secret_platforms import LEAKY, make_package


def redis_dump(client: redis.Redis) -> bytes:
    """Every key and every value in the database, whatever its type, as one blob."""
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        parts.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            parts.append(client.get(key) or b"")
        elif kind == "hash":
            parts += [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "list":
            parts += client.lrange(key, 0, -1)
        elif kind == "set":
            parts += list(client.smembers(key))
        elif kind == "zset":
            parts += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for entry_id, fields in client.xrange(key):
                parts += [entry_id, *[b for pair in fields.items() for b in pair]]
        else:
            pytest.fail(f"key {key!r} has a type the scan does not read: {kind}")
    return b"\n".join(parts)


class ServeProcess:
    """`collector serve` in a subprocess, its log in a file."""

    def __init__(self, config: Config, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve", "--port", str(self.port)],
            env=worker_env(config, **env), stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self.client = ServedApp.__new__(ServedApp)
        self.client.url = f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        return self.client.request(method, path, body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def leaky_config(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    make_package(tmp_path, "leakyplatforms", leaky=LEAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return dataclasses.replace(config, platforms_package="leakyplatforms", log_level="DEBUG")


@pytest.fixture
def api(leaky_config: Config, tmp_path: Path) -> Iterator[ServeProcess]:
    served = ServeProcess(leaky_config, tmp_path / "api.log", PYTHONPATH=str(tmp_path))
    try:
        wait_for(lambda: served.process.poll() is not None or _alive(served), what="the API to start")
        assert served.process.poll() is None, served.log_path.read_text()
        yield served
    finally:
        served.stop()


def _alive(served: ServeProcess) -> bool:
    try:
        return served.request("GET", "/system/alive")[0] == 200
    except OSError:
        return False


def test_a_canary_secret_appears_nowhere(
    api: ServeProcess, leaky_config: Config, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    password, token = f"pw-{uuid.uuid4().hex}", f"tk-{uuid.uuid4().hex}"
    canaries = [password, token, quote(password), quote(token)]
    pool = start_pool(2, leaky_config, PYTHONPATH=str(tmp_path), COLLECTOR_LOG_LEVEL="DEBUG")

    answers: list[object] = []
    jobs: dict[str, str] = {}
    for outcome in ("succeed", "fail", "crash"):
        status, body = api.request("POST", "/execution/run", {
            "_id": outcome, "platform_id": "leaky",
            "settings": {"password": password, "token": token, "outcome": outcome},
        })
        assert status == 202, body
        answers.append(body)
        jobs[outcome] = body["job_id"]  # type: ignore[index]

    def ended(job_id: str) -> dict | None:
        _, view = api.request("GET", f"/execution/get?job_id={job_id}&full")
        return view if view["status"] in ("finished", "failed") else None  # type: ignore[index]

    views = {outcome: wait_for(lambda j=job_id: ended(j), timeout_s=30, what=f"{outcome} job to end")
             for outcome, job_id in jobs.items()}
    assert views["succeed"]["status"] == "finished"
    assert views["succeed"]["result"] == {"echo": "used *** and ***", "rows": 1}
    assert views["fail"]["status"] == "failed" and views["crash"]["status"] == "failed"
    assert "Bearer ***" in views["fail"]["error"]["message"] and "password=***" in views["fail"]["error"]["message"]
    assert "postgresql://svc:***@db.invalid" in views["fail"]["error"]["traceback"]
    assert views["succeed"]["settings"]["password"] == "***"
    answers += list(views.values())
    answers += [api.request("POST", "/system/alive")[1], api.request("GET", "/platforms/get")[1]]

    pages = ["/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/view/jobs", "/rq/0/data/queues.json",
             "/rq/0/data/workers.json"]
    for job_id in jobs.values():
        pages += [f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"]
    for registry in ("queued", "started", "finished", "failed", "deferred", "scheduled", "canceled"):
        pages += [f"/rq/0/view/jobs/collector/{registry}/8/asc/1",
                  f"/rq/0/data/jobs/collector/{registry}/8/asc/1.json"]
    for page in pages:
        status, body = api.request("GET", page)
        assert status == 200, (page, body)
        answers.append(body)
    failed_json = json.dumps(api.request("GET", f"/rq/0/data/job/{jobs['fail']}.json")[1])
    assert "Bearer ***" in failed_json  # the dashboard shows the (masked) failure

    dump = redis_dump(redis_client)
    assert dump.count(b"collector:job:") >= 3
    pool.stop()
    api.stop()
    pool_log, api_log = pool.output(), api.log_path.read_text(errors="replace")
    assert "raw logger: password=*** token=*** url=postgresql://svc:***@db.invalid" in pool_log
    assert "connecting to postgresql://svc:***@db.invalid:5432/app with password ***" in pool_log
    assert "POST /execution/run" in api_log

    text = json.dumps(answers)
    for canary in canaries:
        assert canary not in text, f"an API answer or dashboard page shows {canary}"
        assert canary.encode() not in dump, "Redis holds the secret in plain text"
        assert canary not in pool_log, "the worker pool logged the secret"
        assert canary not in api_log, "the API logged the secret"
