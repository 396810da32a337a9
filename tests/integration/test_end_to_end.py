"""A real Redis, a real `collector worker` pool and the API over HTTP: jobs from submit to their end."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import redis

from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for


def submit(served: ServedApp, settings: dict, client_id: str = "t1", **extra: object) -> str:
    status, body = served.request("POST", "/execution/run",
                                  {"_id": client_id, "platform_id": "demo", "settings": settings, **extra})
    assert status == 202, body
    assert body["status"] == "queued"
    return body["job_id"]


def view(served: ServedApp, job_id: str, full: str = "") -> dict:
    status, body = served.request("GET", f"/execution/get?job_id={job_id}{full}")
    assert status == 200, body
    return body


def test_a_job_moves_from_queued_through_started_with_rising_progress_to_finished(
    served: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    job_id = submit(served, {"rows": 300, "delay_s": 0.005})
    assert view(served, job_id)["status"] == "queued"
    start_pool(2)
    seen: list[dict] = []

    def ended() -> bool:
        record = view(served, job_id)
        seen.append(record)
        return record["status"] == "finished"

    wait_for(ended, timeout_s=30, interval_s=0.05, what="the job to finish")
    started = [r["progress"] for r in seen if r["status"] == "started" and r.get("progress")]
    assert len(started) >= 2, "progress was seen while the job ran"
    assert started[0]["done"] < started[-1]["done"], "progress rose"
    assert any(p["eta_s"] and p["eta_s"] > 0 for p in started), "an ETA was given while running"
    final = seen[-1]
    assert final["result"] == {"rows": 300}
    assert final["progress"]["percent"] == 100.0
    assert final["datasets"]["original"]["rows"] == 300 and final["datasets"]["original"]["bytes"] > 0
    for field in ("created_at", "enqueued_at", "started_at", "ended_at", "worker"):
        assert final[field], field
    full = view(served, job_id, "&full")
    assert len(full["datasets"]["original"]) == 300 and full["datasets"]["processed"][0]["even"] is False
    assert view(served, job_id, "&full=true")["datasets"] == full["datasets"]


def test_a_failing_job_ends_failed_with_the_platforms_error(
    served: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    start_pool(1)
    job_id = submit(served, {"rows": 10, "fail_at": 4})
    record = wait_for(lambda: (r := view(served, job_id))["status"] == "failed" and r, what="failure")
    assert record["error"]["type"] == "FatalError" and "row 4" in record["error"]["message"]


def test_a_child_killed_mid_job_fails_its_job_at_once_and_the_pool_is_whole_again(
    served: ServedApp, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    pool = start_pool(2)
    job_id = submit(served, {"rows": 1000, "delay_s": 0.01}, retry={"max": 0})  # no retries left: fails
    record = wait_for(lambda: (r := view(served, job_id))["status"] == "started" and r.get("progress") and r,
                      what="the job to start")
    pid = int(redis_client.hget(f"rq:worker:{record['worker']}", "pid"))
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    failed = wait_for(lambda: (r := view(served, job_id))["status"] == "failed" and r, timeout_s=5,
                      what="the job to be marked failed")
    assert time.monotonic() - killed_at < 2.0
    assert failed["error"] == {
        "type": "WorkerDiedError",
        "message": "worker process killed by signal 9 (SIGKILL): by an operator, a timeout, or the kernel's "
        "out-of-memory killer",
    }
    assert failed["ended_at"]
    names = wait_for(lambda: (n := pool.worker_names()) and len(n) == 2 and record["worker"] not in n and n,
                     what="a replacement worker")
    assert len(names) == 2
    assert redis_client.zcard("rq:wip:collector") == 0, "nothing is left in RQ's started registry"
    assert redis_client.zscore("rq:failed:collector", job_id) is not None
    after = submit(served, {"rows": 3})
    wait_for(lambda: view(served, after)["status"] == "finished", what="the next job on the mended pool")


def test_sigterm_lets_the_running_job_finish_then_every_worker_exits(
    served: ServedApp, start_pool: Callable[..., PoolProcess], config: Config
) -> None:
    pool = start_pool(2)
    job_id = submit(served, {"rows": 100, "delay_s": 0.01})
    wait_for(lambda: view(served, job_id)["status"] == "started", what="the job to start")
    pool.process.send_signal(signal.SIGTERM)
    assert pool.process.wait(20) == 0
    assert view(served, job_id)["status"] == "finished"
    assert pool.worker_names() == []
