"""rq-dashboard at /rq: every page and JSON endpoint answers while jobs run, and shows no job arguments."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import PoolProcess, ServedApp, wait_for


def test_every_dashboard_page_loads_while_jobs_run_and_no_arguments_show(
    served: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    start_pool(2)
    ids = []
    for n in range(3):
        status, body = served.request("POST", "/execution/run", {
            "platform_id": "demo", "settings": {"rows": 200, "delay_s": 0.01, "fail_at": 150 if n == 2 else None},
        })
        assert status == 202
        ids.append(body["job_id"])
    wait_for(lambda: served.request("GET", f"/execution/get?job_id={ids[0]}")[1]["status"] == "started",
             what="a job to start")
    pages = [
        "/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/view/jobs",
        f"/rq/0/view/job/{ids[0]}", "/rq/0/data/queues.json", "/rq/0/data/workers.json",
        f"/rq/0/data/job/{ids[0]}.json",
    ] + [f"/rq/0/data/jobs/collector/{registry}/8/asc/1.json"
         for registry in ("queued", "started", "finished", "failed", "deferred", "scheduled")]
    seen_busy = False
    for path in pages:
        status, body = served.request("GET", path)
        assert status == 200, (path, body)
        text = str(body)
        assert "'rows'" not in text and "delay_s" not in text, f"{path} shows job arguments"
        if path.endswith("workers.json"):
            busy = [w for w in body["workers"] if w["current_job"] != "idle"]
            seen_busy = bool(busy)
            for worker in busy:
                assert worker["current_job"]["call_string"] == "collector.runner.run_job()"
                assert worker["current_job"]["description"] == "demo job"
    assert seen_busy, "the worker view was read while a job ran"
    wait_for(lambda: served.request("GET", f"/execution/get?job_id={ids[2]}")[1]["status"] == "failed",
             timeout_s=20, what="the failing job")
    status, body = served.request("GET", "/rq/0/data/jobs/collector/failed/8/asc/1.json")
    assert status == 200 and [j["id"] for j in body["jobs"]] == [ids[2]]
