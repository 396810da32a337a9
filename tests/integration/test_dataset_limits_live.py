"""Dataset caps with a real Redis, a real pool and the API over HTTP: the million-row job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from collector import defaults
from collector.cli.client import Client
from tests.conftest import PoolProcess, ServedApp, wait_for


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def ended(served: ServedApp, job_id: str) -> dict[str, Any] | None:
    status, body = served.request("GET", f"/execution/get?job_id={job_id}")
    assert status == 200, body
    return body if body["status"] in ("finished", "failed") else None


def test_a_million_row_job_keeps_a_capped_sample_and_full_answers_pages(
    served: ServedApp, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    # The attack: one 60-byte request added 159 MB to Redis for 7 days; `full` on it answered 79 MB.
    start_pool(1)
    before = used_memory(redis_client)
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1_000_000}})
    assert status == 202, body
    job_id = body["job_id"]
    record = wait_for(lambda: ended(served, job_id), timeout_s=120, what="the million-row job to end")
    assert record["status"] == "finished", record.get("error")
    assert used_memory(redis_client) - before < 16 * 1024 * 1024
    assert record["datasets"]["original"]["truncated"] is True
    assert record["datasets"]["original"]["total_rows"] == 1_000_000
    assert record["datasets"]["original"]["rows"] == defaults.DATASET_MAX_ROWS
    status, page = served.request("GET", f"/execution/get?job_id={job_id}&full")
    assert status == 200 and len(page["datasets"]["original"]) == defaults.FULL_PAGE_ROWS
    assert page["datasets_page"]["next_offset"] == defaults.FULL_PAGE_ROWS
    logged = [e["message"] for e in served.request("GET", f"/execution/events?job_id={job_id}")[1]
              if e["type"] == "log"]
    assert any("keeps its first 10000 of 1000000 rows" in line for line in logged)
    every = Client(served.url).get(job_id, full=True)  # what `collector get --full` prints
    assert [row["n"] for row in every["datasets"]["processed"]] == list(range(1, defaults.DATASET_MAX_ROWS + 1))
