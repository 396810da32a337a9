"""Whole pools killed with SIGKILL, and Redis stopped and restarted mid-run: nothing is left `started`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from collector.app import create_app
from collector.cli.embedded import EmbeddedRedis
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import close, events, make_package, submit, view, wait_status, with_package


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def running(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by its new parent, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def start_doomed_job(served: ServedApp, start_pool: Callable[..., PoolProcess], cfg: Config, path: Path,
                     redis_client: redis.Redis) -> tuple[PoolProcess, str, dict, int]:
    doomed = start_pool(1, cfg, PYTHONPATH=str(path))
    job_id = submit(served, "sleeper", {"seconds": 60}, retry={"max": 1, "backoff": 0.1, "jitter": 0})
    record = wait_status(served, job_id, "started")
    child = int(redis_client.hget(f"rq:worker:{record['worker']}", "pid"))
    return doomed, job_id, record, child


def test_a_pool_killed_with_sigkill_has_its_job_retried_by_another_pool(
    package: Path, config: Config, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    cfg = with_package(config)
    served = ServedApp(create_app(cfg))
    try:
        doomed, job_id, first, child = start_doomed_job(served, start_pool, cfg, package, redis_client)
        survivor = start_pool(1, cfg, PYTHONPATH=str(package))
        doomed.process.kill()
        killed = time.monotonic()
        wait_for(lambda: not running(child), timeout_s=5, what="the child to die with its pool")
        again = wait_for(lambda: (r := view(served, job_id))["attempt"] == 2 and r["status"] == "started" and r,
                         timeout_s=30, what="the job to be retried on the surviving pool")
        assert time.monotonic() - killed < 30
        assert again["worker"] in survivor.worker_names() and again["deaths"] == 1
        lost = next(e for e in events(served, job_id) if e["type"] == "worker_lost")
        assert "no heartbeat" in lost["cause"]
        assert first["worker"] not in survivor.worker_names(), "the dead pool's workers are unregistered"
    finally:
        close(served)


def test_with_no_pool_left_the_api_settles_a_dead_pools_job(
    package: Path, config: Config, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    cfg = with_package(config)
    app = create_app(cfg, reaper=True)
    served = ServedApp(app)
    try:
        doomed, job_id, _, child = start_doomed_job(served, start_pool, cfg, package, redis_client)
        doomed.process.kill()
        record = wait_status(served, job_id, "queued", timeout_s=30)   # retried: scheduled, then due, then queued
        assert record["deaths"] == 1 and "no heartbeat" in record["error"]["message"]
        assert not running(child)
        assert redis_client.zcard("rq:wip:collector") == 0, "nothing is left in RQ's started registry"
        assert redis_client.lrange("rq:queue:collector", 0, -1) == [job_id.encode()]
    finally:
        close(served)


@pytest.fixture
def outage_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    data = tmp_path / "redis-data"
    data.mkdir()
    server = EmbeddedRedis(appendonly=True, dir=str(data)).start()
    yield server
    server.stop()


def restart(server: EmbeddedRedis) -> None:
    """Start Redis again on the same port and dir (its AOF brings the data back); the fixture stops it."""
    server.process = EmbeddedRedis(port=server.port, appendonly=True, dir=server.dir).start().process


def test_workers_ride_out_a_redis_restart_and_no_result_is_lost(
    package: Path, config: Config, start_pool: Callable[..., PoolProcess], outage_redis: EmbeddedRedis
) -> None:
    cfg = with_package(dataclasses.replace(config, redis_url=outage_redis.url))
    served = ServedApp(create_app(cfg))
    try:
        pool = start_pool(2, cfg, PYTHONPATH=str(package))
        busy = [submit(served, "sleeper", {"seconds": 2}) for _ in range(2)]
        for job_id in busy:
            wait_status(served, job_id, "started")
        queued_job = submit(served, "flaky", {"failures": 0})   # waits: both workers are busy
        outage_redis.stop()
        status, body = served.request("POST", "/execution/run", {"platform_id": "flaky", "settings": {}})
        assert status == 503 and body["error"] == "service_unavailable" and "unreachable" in body["message"]
        status, body = served.request("POST", "/system/alive")
        assert status == 503 and body["redis"]["ok"] is False and "unreachable" in body["redis"]["error"]
        wait_for(lambda: pool.output().count("final state not written yet") >= 2, timeout_s=10,
                 what="both jobs to end while Redis is down")
        restart(outage_redis)
        for job_id in busy:
            assert wait_status(served, job_id, "finished", timeout_s=30)["result"] == {"slept": 2}
        assert wait_status(served, queued_job, "finished", timeout_s=30)["status"] == "finished"

        # A second outage while both workers wait idle on the queue: they reconnect, nobody dies in a loop.
        retries_before = pool.output().count("could not connect to Redis")
        outage_redis.stop()
        wait_for(lambda: pool.output().count("Redis unreachable") >= 2
                 and pool.output().count("could not connect to Redis") >= retries_before + 8, timeout_s=30,
                 what="the idle workers to retry their connection a few times")
        restart(outage_redis)
        after = submit(served, "flaky", {"failures": 0})
        assert wait_status(served, after, "finished", timeout_s=30)["status"] == "finished"
        assert pool.process.poll() is None, "the pool lived through the outages"
        assert pool.output().count("worker process") <= 2, "no respawn storm"
        pool.stop()
    finally:
        close(served)
