"""rq-dashboard at /rq: every page and JSON endpoint answers while jobs run, and shows no job arguments."""

from __future__ import annotations

import http.client
from collections.abc import Callable

import redis

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
    # RQ's side of a failure is written after collector's record: wait for it rather than read it at once.
    failed_list = "/rq/0/data/jobs/collector/failed/8/asc/1.json"
    wait_for(lambda: served.request("GET", failed_list)[1].get("jobs"), timeout_s=20, what="RQ's failed list")
    status, body = served.request("GET", failed_list)
    assert status == 200 and [j["id"] for j in body["jobs"]] == [ids[2]]


def test_the_jobs_tab_opens_on_collectors_queue(served: ServedApp) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/rq/0/view/jobs")
    answer = connection.getresponse()
    location = answer.getheader("Location", "")
    assert answer.status == 302 and location.endswith("/rq/0/view/jobs/collector/queued/8/asc/1"), location
    connection.close()
    status, page = served.request("GET", "/rq/0/view/jobs")   # followed, as a browser does
    assert status == 200 and 'value="collector"' in page and "<strong>collector</strong>" in page
    assert "<strong>default</strong>" not in page


def test_descriptions_name_the_platform_and_the_client_id(served: ServedApp) -> None:
    ids = {}
    for client_id in ("first-demo", "<img src=x onerror=alert(1)>", None):
        spec = {"platform_id": "demo", "settings": {"rows": 1}, **({"_id": client_id} if client_id else {})}
        status, body = served.request("POST", "/execution/run", spec)
        assert status == 202
        ids[client_id] = body["job_id"]
    shown = {}
    for client_id, job_id in ids.items():
        status, body = served.request("GET", f"/rq/0/data/job/{job_id}.json")
        assert status == 200
        shown[client_id] = body["description"]
    assert shown == {"first-demo": "demo job, _id first-demo", None: "demo job",
                     "<img src=x onerror=alert(1)>": "demo job, _id ?img?src=x?onerror=alert?1??"}
    status, listed = served.request("GET", "/rq/0/data/jobs/collector/queued/8/asc/1.json")
    assert status == 200 and {j["description"] for j in listed["jobs"]} == set(shown.values())


def test_connection_checks_stay_out_of_the_finished_count(
    served: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    start_pool(1)
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}})
    assert status == 202
    job_id = body["job_id"]
    wait_for(lambda: served.request("GET", f"/execution/get?job_id={job_id}")[1]["status"] == "finished",
             timeout_s=30, what="the job to finish")
    for _ in range(3):
        status, answer = served.request("POST", "/platforms/check", {"platform_id": "demo", "settings": {}})
        assert status == 200, answer
    status, queues = served.request("GET", "/rq/0/data/queues.json")
    assert status == 200
    (queue,) = [q for q in queues["queues"] if q["name"] == "collector"]
    status, finished = served.request("GET", "/rq/0/data/jobs/collector/finished/50/asc/1.json")
    assert status == 200 and [j["id"] for j in finished["jobs"]] == [job_id]
    assert queue["finished_job_registry_count"] == 1, "the count is what the list shows"


def test_the_job_page_data_is_html_escaped_and_a_gone_job_is_a_404(
    served: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    """rq-dashboard's job page puts its data into the page as HTML: an error text a client's spec chose (here a
    path in it) must arrive escaped, as its jobs list shows it."""
    start_pool(1)
    tag = "<img src=x onerror=alert(document.domain)>"
    status, body = served.request("POST", "/execution/run", {
        "platform_id": "csv_source", "settings": {"path": f"{tag}.csv"}})
    assert status == 202, body
    job_id = body["job_id"]
    wait_for(lambda: served.request("GET", f"/execution/get?job_id={job_id}")[1]["status"] == "failed",
             timeout_s=20, what="the job to fail")
    status, data = served.request("GET", f"/rq/0/data/job/{job_id}.json")
    assert status == 200 and data["exc_info"], data
    assert "<img" not in str(data) and "&lt;img src=x onerror=alert(document.domain)&gt;" in data["exc_info"]
    status, data = served.request("GET", "/rq/0/data/job/no-such-job.json")
    assert status == 404 and data["error"] == "not_found", data


XHR = {"X-Requested-With": "XMLHttpRequest"}


def test_empty_cancels_the_queued_jobs_of_every_lane_rather_than_stranding_their_records(
    served: ServedApp, redis_client: redis.Redis
) -> None:
    """RQ's Empty deletes the job hashes of the queue's one list: collector's records would say `queued` for good,
    and jobs of the high and low lanes would stay."""
    ids = []
    for priority in ("high", "normal", "low"):
        status, body = served.request("POST", "/execution/run", {
            "platform_id": "demo", "settings": {"rows": 1}, "priority": priority})
        assert status == 202, body
        ids.append(body["job_id"])
    redis_client.rpush("rq:queue:collector", "a-job-that-is-gone")
    ended = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1},
                                                      "priority": "high"})[1]["job_id"]
    served.request("POST", f"/execution/cancel?job_id={ended}", headers=XHR)   # ended; its id put back by hand:
    redis_client.rpush("rq:queue:collector:high", ended)                       # RQ's delete misses the high lane
    status, body = served.request("POST", "/rq/queue/collector/queued/empty", raw=b"", headers=XHR)
    assert status == 200 and body == {"status": "OK", "canceled": 3, "deleted": 2}, body
    for job_id in ids:
        record = served.request("GET", f"/execution/get?job_id={job_id}")[1]
        assert record["status"] == "canceled" and record["cancel_reason"] == "emptied in the dashboard", record
    lanes = ("rq:queue:collector", "rq:queue:collector:high", "rq:queue:collector:low")
    assert [redis_client.llen(key) for key in lanes] == [0, 0, 0]
    status, body = served.request("POST", "/rq/queue/collector/nosuch/empty", raw=b"", headers=XHR)
    assert status == 404 and "no list 'nosuch'" in body["message"], body


def test_compact_drops_the_ids_of_jobs_that_are_gone_in_one_step(
    served: ServedApp, redis_client: redis.Redis
) -> None:
    ids = []
    for n in range(3):
        status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}})
        ids.append(body["job_id"])
        redis_client.rpush("rq:queue:collector", f"gone-{n}")
    redis_client.rpush("rq:queue:collector:low", "gone-low")
    status, body = served.request("POST", "/rq/queue/collector/compact", raw=b"", headers=XHR)
    assert status == 200 and body == {"status": "OK", "dropped": 4}, body
    assert [raw.decode() for raw in redis_client.lrange("rq:queue:collector", 0, -1)] == ids
    assert not redis_client.exists("rq:queue:collector:low")
    status, body = served.request("POST", "/rq/queue/nosuch/compact", raw=b"", headers=XHR)
    assert status == 404 and "no queue 'nosuch'" in body["message"], body
    redis_client.delete("rq:queue:collector")   # nothing waits: the queue has no list, and is still there
    status, body = served.request("POST", "/rq/queue/collector/compact", raw=b"", headers=XHR)
    assert status == 200 and body == {"status": "OK", "dropped": 0}, body
