"""Priorities and idempotency keys with a real Redis, real worker processes and the API served over HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import close, view, wait_status

BLOCKER = {"rows": 1, "delay_s": 1.5}  # holds the pool's only child while the others queue


@pytest.fixture
def served(config: Config) -> Iterator[ServedApp]:
    app = ServedApp(create_app(dataclasses.replace(config, submits_per_minute=0)))
    yield app
    close(app)


def submit(served: ServedApp, settings: dict, **extra: object) -> str:
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": settings, **extra})
    assert status == 202, body
    return body["job_id"]


def started_order(served: ServedApp, job_ids: list[str]) -> list[str]:
    records = {job_id: wait_status(served, job_id, "finished", timeout_s=30) for job_id in job_ids}
    return sorted(job_ids, key=lambda job_id: records[job_id]["started_at"])


def test_a_pool_runs_high_before_normal_before_low(served: ServedApp, start_pool: Callable[..., PoolProcess],
                                                   redis_client: redis.Redis) -> None:
    start_pool(1)
    blocker = submit(served, BLOCKER)
    wait_status(served, blocker, "started")
    low = [submit(served, {"rows": 1}, priority="low") for _ in range(3)]
    normal = [submit(served, {"rows": 1}) for _ in range(3)]
    high = [submit(served, {"rows": 1}, priority="high") for _ in range(3)]
    assert redis_client.llen("rq:queue:collector:high") == 3 and redis_client.llen("rq:queue:collector:low") == 3
    assert started_order(served, low + normal + high) == high + normal + low
    assert view(served, high[0])["priority"] == "high"


def test_a_low_job_waiting_past_the_age_step_goes_before_newer_normal_ones(
    served: ServedApp, start_pool: Callable[..., PoolProcess], config: Config
) -> None:
    start_pool(1, dataclasses.replace(config, priority_age_s=1.0), COLLECTOR_PRIORITY_AGE_S="1")
    blocker = submit(served, BLOCKER)
    wait_status(served, blocker, "started")
    old_low = submit(served, {"rows": 1}, priority="low")
    wait_for(lambda: view(served, blocker)["status"] == "finished" or None, timeout_s=10, what="the blocker to end")
    # The blocker held the child for more than one step: the low job ranks as normal and has waited longest.
    normal = [submit(served, {"rows": 1}) for _ in range(2)]
    order = started_order(served, [old_low, *normal])
    assert order[0] == old_low, order


def test_an_idle_pool_starts_a_high_job_at_once(served: ServedApp, start_pool: Callable[..., PoolProcess]) -> None:
    start_pool(2)
    job_id = submit(served, {"rows": 1}, priority="high")
    assert wait_status(served, job_id, "finished", timeout_s=10)["priority"] == "high"


def test_concurrent_submits_with_one_key_make_one_job_that_runs_once(
    served: ServedApp, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    start_pool(1)
    body = {"platform_id": "demo", "settings": {"rows": 3}, "idempotency_key": "nightly-2026-12-03"}
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda _: served.request("POST", "/execution/run", body), range(40)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 39 + [202], statuses
    job_ids = {answer["job_id"] for _, answer in answers}
    assert len(job_ids) == 1
    [job_id] = job_ids
    assert all(answer["deduplicated"] and answer["duplicate_of"] == job_id for status, answer in answers
               if status == 200)
    assert wait_status(served, job_id, "finished", timeout_s=20)["attempt"] == 1
    assert redis_client.zcard("collector:jobs") == 1
    status, error = served.request("POST", "/execution/run", {**body, "settings": {"rows": 4}})
    assert status == 409 and error["error"] == "conflict" and error["details"]["job_id"] == job_id
