"""Rate limits with real pools: two pools' jobs share a platform's and a connection's bucket on a real Redis, and a
source's 429 holds every pool back."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.local_server import Answer, LocalServer, Seen, json_answer

ENDED = ("finished", "failed", "stopped", "canceled")


class Arrivals:
    """When each request reached the local server (monotonic clock of this process)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()

    def answer(self, then: Callable[[Seen, int], Answer] | None = None) -> Callable[[Seen, int], Answer]:
        def route(seen: Seen, n: int) -> Answer:
            with self.lock:
                self.times.append(time.monotonic())
            return then(seen, n) if then else json_answer({"ok": True})
        return route

    def most_in_one_second(self) -> int:
        times = sorted(self.times)
        return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


@pytest.fixture
def source(local_server: LocalServer) -> LocalServer:
    return local_server


@pytest.fixture
def paced(config: Config) -> Config:
    return dataclasses.replace(config, platforms_package="tests.paced_platforms", egress_allow="127.0.0.1")


@pytest.fixture
def api(paced: Config) -> Iterator[ServedApp]:
    served = ServedApp(create_app(paced))
    yield served
    served.close()


def run_all(served: ServedApp, specs: list[dict[str, Any]], redis_client: redis.Redis) -> list[dict[str, Any]]:
    ids = []
    for spec in specs:
        status, body = served.request("POST", "/execution/run", spec)
        assert status == 202, body
        ids.append(body["job_id"])

    def ended() -> list[dict[str, Any]] | None:
        records = [served.request("GET", f"/execution/get?job_id={job_id}")[1] for job_id in ids]
        return records if all(r["status"] in ENDED for r in records) else None

    return wait_for(ended, timeout_s=90, interval_s=0.2, what="every job to end")


def test_two_pools_keep_to_a_platform_s_rate_limit_together(
    paced: Config, api: ServedApp, source: LocalServer, start_pool: Callable[..., PoolProcess],
    redis_client: redis.Redis,
) -> None:
    arrivals = Arrivals()
    source.route("/items", arrivals.answer())
    start_pool(2, paced)
    start_pool(2, paced)
    status, listing = api.request("GET", "/platforms/get")
    assert status == 200 and listing["platforms"][0]["rate_limit"] == "10/s"
    records = run_all(api, [{"platform_id": "paced", "settings": {"url": source.url("/items"), "requests": 5}}
                            for _ in range(8)], redis_client)
    assert [r["status"] for r in records] == ["finished"] * 8
    assert len({r["pool"] for r in records}) == 2, "both pools ran jobs"
    times = sorted(arrivals.times)
    assert len(times) == 40
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 8.0 <= rate <= 10.5, f"{rate:.2f} requests/s over {times[-1] - times[0]:.2f} s, for a limit of 10/s"
    assert arrivals.most_in_one_second() <= 12          # ten, and the jitter of a request's way over
    assert redis_client.exists("collector:bucket:platform:paced")


def test_a_source_s_429_holds_every_pool_back_until_its_retry_after(
    paced: Config, api: ServedApp, source: LocalServer, start_pool: Callable[..., PoolProcess],
    redis_client: redis.Redis,
) -> None:
    arrivals = Arrivals()
    source.route("/items", arrivals.answer(
        lambda seen, n: json_answer({"error": "slow down"}, 429, {"Retry-After": "2"}) if n == 3 else json_answer({})))
    start_pool(2, paced)
    start_pool(2, paced)
    records = run_all(api, [{"platform_id": "paced", "settings": {"url": source.url("/items"), "requests": 3}}
                            for _ in range(4)], redis_client)
    assert [r["status"] for r in records] == ["finished"] * 4
    times = sorted(arrivals.times)
    assert len(times) == 13                                   # 12 requests and the one retried
    refused = times[3]
    after = [t for t in times if t > refused]
    assert min(after) - refused >= 1.9, f"the first request after the 429 came {min(after) - refused:.2f} s later"


def test_a_connection_s_rate_limit_holds_over_every_pool(
    config: Config, tmp_path: Path, source: LocalServer, start_pool: Callable[..., PoolProcess],
    redis_client: redis.Redis,
) -> None:
    path = tmp_path / "connections.toml"
    path.write_text(f'[partner]\nkind = "http"\nbase_url = "{source.base}/api"\nrate_limit = "4/s"\n')
    live = dataclasses.replace(config, connections=str(path))
    arrivals = Arrivals()
    source.route("/api/items", arrivals.answer(lambda seen, n: json_answer({"items": [{"id": n}]})))
    served = ServedApp(create_app(live))
    try:
        start_pool(2, live)
        start_pool(2, live)
        records = run_all(served, [{"platform_id": "http_json", "settings": {
            "connection": "partner", "url": "items", "record_path": "items"}} for _ in range(8)], redis_client)
        listing = served.request("GET", "/platforms/get")[1]
    finally:
        served.close()
    assert [r["status"] for r in records] == ["finished"] * 8
    assert {"name": "partner", "kind": "http", "rate_limit": "4/s"} in listing["connections"]
    times = sorted(arrivals.times)
    assert len(times) == 8
    # One every 0.25 s, whichever pool sends it (gaps vary by how long each request takes to arrive).
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.15 and 7 / (times[-1] - times[0]) <= 4.4, gaps
