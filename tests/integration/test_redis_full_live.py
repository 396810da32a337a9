"""A Redis at its maxmemory (noeviction), with the API over HTTP and a real pool: 503, nothing half-written,
and a job that ends meanwhile waits to write its end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from collector.app import create_app
from collector.cli.embedded import EmbeddedRedis
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def ended(served: ServedApp, job_id: str) -> dict[str, Any] | None:
    status, body = served.request("GET", f"/execution/get?job_id={job_id}")
    assert status == 200, body
    return body if body["status"] in ("finished", "failed") else None


@pytest.fixture
def full_redis() -> Iterator[EmbeddedRedis]:
    """A private Redis of its own: the test fills it, so the session's server stays untouched."""
    server = EmbeddedRedis().start()
    yield server
    server.stop()


def fill(client: redis.Redis) -> None:
    """Put Redis over its maxmemory: with noeviction every write that needs memory is refused (OOM)."""
    client.config_set("maxmemory", used_memory(client) // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", "x")


def test_a_full_redis_is_503_and_a_submit_leaves_nothing_half_written(full_redis: EmbeddedRedis,
                                                                      config: Config) -> None:
    cfg = dataclasses.replace(config, redis_url=full_redis.url)
    client = redis.Redis.from_url(full_redis.url)
    served = ServedApp(create_app(cfg))
    try:
        status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}})
        assert status == 202, body
        keys = set(client.keys())
        fill(client)
        for path, request in (
            ("/execution/run", {"platform_id": "demo", "settings": {"rows": 1}}),
            ("/schedules", {"spec": {"platform_id": "demo"}, "interval_s": 3600}),
            ("/process/run", {"name": "p", "steps": [{"name": "s", "tasks": [{"name": "t", "platform_id": "demo"}]}]}),
        ):
            status, answer = served.request("POST", path, request)
            assert status == 503, (path, answer)
            assert answer["error"] == "redis_full" and "maxmemory" in answer["message"], answer
        assert set(client.keys()) == keys, "no record, index entry, queue entry or rate count was written"
        assert client.zcard("collector:jobs") == 1 and client.llen("rq:queue:collector") == 1
        assert client.zcard("collector:schedules:due") == 0
        client.config_set("maxmemory", 0)
        status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}})
        assert status == 202, body
    finally:
        served.close()
        client.close()


def test_a_job_that_ends_while_redis_is_full_waits_and_then_keeps_its_end(
    full_redis: EmbeddedRedis, config: Config, start_pool: Callable[..., PoolProcess]
) -> None:
    cfg = dataclasses.replace(config, redis_url=full_redis.url)
    client = redis.Redis.from_url(full_redis.url)
    served = ServedApp(create_app(cfg))
    try:
        pool = start_pool(1, cfg)
        status, body = served.request("POST", "/execution/run",
                                      {"platform_id": "demo", "settings": {"rows": 20, "delay_s": 0.05}})
        assert status == 202, body
        job_id = body["job_id"]
        wait_for(lambda: client.hget(f"collector:job:{job_id}", "status") == b"started", what="the job to start")
        fill(client)
        wait_for(lambda: "final state not written yet, Redis is full" in pool.output(), timeout_s=30,
                 what="the worker to wait for Redis to take its final write")
        assert client.hget(f"collector:job:{job_id}", "status") == b"started"
        assert "OutOfMemoryError" not in pool.output() and '"n": 1' not in pool.output(), "no rows in the log"
        client.config_set("maxmemory", 0)
        record = wait_for(lambda: ended(served, job_id), what="the job's end to be written")
        assert record["status"] == "finished" and record["datasets"]["original"]["rows"] == 20
        assert record["result"] == {"rows": 20}
    finally:
        served.close()
        client.close()
