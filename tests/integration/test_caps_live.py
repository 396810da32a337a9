"""Concurrency caps with real pools: more jobs than the cap never run more than the cap at once over two pools,
parked jobs all finish, and a kill -9 of a child holding a slot frees it for the next parked job."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import ROOT, PoolProcess, ServedApp
from tests.integration.reliability_kit import close, events, submit, view, wait_status

PACKAGE = "cappedplatforms"
CAPPED = '''
"""Sleeps `seconds` and says when it ran; two of its jobs per concurrency key run at once, over every pool."""
import time

from collector.platform import Platform


class Capped(Platform):
    """Sleeps, then returns its start and end (epoch seconds)."""

    CONCURRENCY = 2

    def __init__(self, seconds: float = 0.4) -> None:
        self.seconds = seconds

    def _run(self, ctx):
        start = time.time()
        time.sleep(self.seconds)
        return {"start": start, "end": time.time()}
'''


@pytest.fixture
def kit_config(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    target = tmp_path / PACKAGE
    shutil.copytree(ROOT / "platforms", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "capped.py").write_text(textwrap.dedent(CAPPED))
    monkeypatch.syspath_prepend(str(tmp_path))
    return dataclasses.replace(config, platforms_package=PACKAGE, concurrency="capped:solo=1")


@pytest.fixture
def served(kit_config: Config) -> Iterator[ServedApp]:
    app = ServedApp(create_app(kit_config))
    yield app
    close(app)


@pytest.fixture
def pools(kit_config: Config, tmp_path: Path) -> Iterator[Callable[[int], PoolProcess]]:
    started: list[PoolProcess] = []

    def start(size: int) -> PoolProcess:
        pool = PoolProcess(kit_config, size, tmp_path / f"pool-{len(started)}.log", PYTHONPATH=str(tmp_path),
                           COLLECTOR_CONCURRENCY=kit_config.concurrency)
        started.append(pool)
        return pool.wait_ready()

    yield start
    for pool in started:
        pool.stop()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_two_pools_never_run_more_than_the_cap_and_parked_jobs_all_finish(
    served: ServedApp, pools: Callable[[int], PoolProcess], redis_client: redis.Redis
) -> None:
    pools(3)
    pools(3)
    jobs = [submit(served, "capped", {"seconds": 0.4}) for _ in range(10)]
    records = [wait_status(served, job_id, "finished", timeout_s=60) for job_id in jobs]
    spans = [(r["result"]["start"], r["result"]["end"]) for r in records]
    assert most_at_once(spans) == 2, spans
    parked = [job_id for job_id in jobs if any(e["type"] == "deferred" for e in events(served, job_id))]
    assert parked, "six children and a cap of two: some jobs must have been parked"
    assert all(view(served, job_id)["attempt"] == 1 for job_id in parked)  # parking is no attempt
    assert redis_client.zcard("collector:cap:capped:slots") == 0
    assert redis_client.llen("collector:cap:capped:parked") == 0


def test_a_parked_job_shows_what_it_waits_for_and_a_kill_9_frees_the_slot(
    served: ServedApp, pools: Callable[[int], PoolProcess], redis_client: redis.Redis
) -> None:
    pools(2)
    holder = submit(served, "capped", {"seconds": 60}, concurrency_key="solo", retry={"max": 0})
    wait_status(served, holder, "started")
    waiting = submit(served, "capped", {"seconds": 0.1}, concurrency_key="solo")
    record = wait_status(served, waiting, "deferred")
    assert record["waiting_for"] == "concurrency" and record["concurrency"] == "capped:solo"
    assert redis_client.lrange("collector:cap:capped:solo:parked", 0, -1) == [waiting.encode()]

    worker = view(served, holder)["worker"]
    os.kill(int(redis_client.hget(f"rq:worker:{worker}", "pid")), signal.SIGKILL)
    ended = wait_status(served, holder, "failed", timeout_s=30)
    assert "signal 9" in ended["error"]["message"]
    done = wait_status(served, waiting, "finished", timeout_s=30)
    assert "waiting_for" not in done
    assert redis_client.zcard("collector:cap:capped:solo:slots") == 0
