"""Schedules with real pools: ticks fire on their own, once each, however many pools are up."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for


@pytest.fixture
def served(config: Config) -> Iterator[ServedApp]:
    """The API of an operator who allows one-second schedules (COLLECTOR_SCHEDULE_MIN_INTERVAL_S=1)."""
    served_app = ServedApp(create_app(dataclasses.replace(config, schedule_min_interval_s=1)))
    yield served_app
    served_app.close()


def test_an_interval_schedule_runs_once_per_tick_with_two_pools(
    served: ServedApp, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    start_pool(1)
    start_pool(1)
    status, created = served.request("POST", "/schedules", {
        "name": "every second", "spec": {"platform_id": "demo", "settings": {"rows": 2}}, "interval_s": 1,
    })
    assert status == 201, created
    schedule_id = created["id"]
    wait_for(lambda: served.request("GET", f"/schedules/{schedule_id}")[1]["runs"] >= 3, timeout_s=20,
             what="three ticks")
    assert served.request("DELETE", f"/schedules/{schedule_id}", {})[0] == 200
    job_keys = [k.decode() for k in redis_client.scan_iter(f"collector:job:{schedule_id}-*")
                if k.count(b":") == 2]
    ticks = sorted(int(k.rsplit("-", 1)[1]) for k in job_keys)
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks)
    assert all(b - a >= 1 for a, b in itertools.pairwise(ticks)), "one job per one-second tick"

    def all_done() -> bool:
        return all(redis_client.hget(k, "status") == b"finished" for k in job_keys)

    wait_for(all_done, what="every scheduled job to finish")
    assert all(redis_client.hget(k, "attempt") == b"1" for k in job_keys), "no tick ran twice"
