"""Metrics and logs with real worker processes: counters shared through Redis, JSON log lines per job event."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PoolProcess, ServedApp, wait_for


def scrape(served: ServedApp) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import urllib.request

    with urllib.request.urlopen(served.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def submit(served: ServedApp, settings: dict[str, Any], **spec: Any) -> str:
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": settings, **spec})
    assert status == 202, body
    return body["job_id"]


def test_counters_cover_jobs_that_finished_failed_or_lost_their_worker(
    served: ServedApp, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    pool = start_pool(2, COLLECTOR_LOG_FORMAT="json")
    ok = submit(served, {"rows": 3})
    bad = submit(served, {"rows": 3, "fail_at": 2})
    wait_for(lambda: all(served.request("GET", f"/execution/get?job_id={j}")[1]["status"] in ("finished", "failed")
                         for j in (ok, bad)), what="both jobs to end")
    slow = submit(served, {"rows": 1000, "delay_s": 0.01}, retry={"max": 0})
    # Killed once it reports progress: its `started` line is logged by then (the record says `started` a moment
    # before the worker logs it, and a kill in between would lose the line).
    record = wait_for(lambda: (r := served.request("GET", f"/execution/get?job_id={slow}")[1])["status"] == "started"
                      and (r.get("progress") or {}).get("done") and r, what="the slow job to start")
    os.kill(int(redis_client.hget(f"rq:worker:{record['worker']}", "pid")), signal.SIGKILL)
    demo = (("platform", "demo"),)
    got = wait_for(lambda: (m := scrape(served)).get(("collector_jobs_failed_total", demo)) == 2 and m,
                   what="the killed job to count as failed")
    assert got[("collector_jobs_submitted_total", demo)] == 3
    assert got[("collector_jobs_started_total", demo)] == 3
    assert got[("collector_jobs_finished_total", demo)] == 1
    assert got[("collector_job_duration_seconds_count", demo)] == 2  # a killed job's duration is unknown
    wait_for(lambda: scrape(served)[("collector_workers", ())] == 2, what="the replacement worker")

    lines = [json.loads(line) for line in pool.output().splitlines() if line.startswith("{")]
    events = {(line.get("job_id"), line.get("event")) for line in lines if line.get("platform_id") == "demo"}
    assert {(ok, "started"), (ok, "finished"), (bad, "started"), (bad, "failed"), (slow, "started")} <= events
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
