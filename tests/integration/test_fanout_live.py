"""Sub-jobs with real workers: a date range fans out into one child per day, run in parallel, summed; failures
and cancels travel between parent and children."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from collector.store.records import ENDED
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import close, events, submit, view, wait_status


@pytest.fixture
def api(config: Config) -> Iterator[ServedApp]:
    served = ServedApp(create_app(config))
    yield served
    close(served)


def test_a_date_range_fans_out_per_day_and_the_parent_sums_the_children(
    api: ServedApp, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    start_pool(3)
    parent = submit(api, "date_partitions", {"start_date": "2024-05-01", "end_date": "2024-05-04",
                                             "rows_per_day": 10, "delay_s": 0.05})
    waiting = wait_status(api, parent, "waiting")
    assert waiting["waiting"]["kind"] == "children"
    done = wait_status(api, parent, "finished", "failed", timeout_s=30)
    assert done["status"] == "finished", done.get("error")
    assert done["result"] == {"days": 4, "rows": 40, "from": "2024-05-01", "to": "2024-05-04"}
    children = done["children"]
    assert [c["job_id"] for c in children] == [f"{parent}-c{n}" for n in range(4)]
    assert all(c["status"] == "finished" and c["platform_id"] == "date_partitions" for c in children)
    records = [view(api, c["job_id"]) for c in children]
    assert [r["result"]["from"] for r in records] == ["2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04"]
    assert all(r["parent_id"] == parent and r["attempt"] == 1 for r in records), "each child ran once"
    # The children ran side by side while the parent held no worker: two of them overlapped in time.
    spans = sorted((r["started_at"], r["ended_at"]) for r in records)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    # The resumed parent queued nothing twice: exactly four child records exist.
    child_keys = [k for k in redis_client.keys(f"collector:job:{parent}-c*") if k.count(b":") == 2]
    assert len(child_keys) == 4
    full = api.request("GET", f"/execution/get?job_id={parent}&full")[1]
    assert full["datasets"]["processed"] == [{"day": f"2024-05-0{d}", "rows": 10} for d in range(1, 5)]
    kinds = [e["type"] for e in events(api, parent)]
    assert kinds.count("started") == 2 and "waiting" in kinds and "resumed" in kinds


def test_get_shows_the_children_of_a_waiting_parent_and_each_child_names_its_parent(
    api: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    start_pool(1)  # one worker: the parent waits while the children queue up behind one another
    parent = submit(api, "date_partitions", {"start_date": "2024-01-01", "end_date": "2024-01-03",
                                             "rows_per_day": 5, "delay_s": 0.1})
    record = wait_status(api, parent, "waiting")
    assert [c["job_id"] for c in record["children"]] == [f"{parent}-c{n}" for n in range(3)]
    assert all(set(c) == {"job_id", "status", "platform_id"} for c in record["children"])
    assert {c["status"] for c in record["children"]} <= {"queued", "started", "finished"}
    assert record["waiting"]["children"], "the children still running are listed"
    assert view(api, f"{parent}-c0")["parent_id"] == parent
    assert wait_status(api, parent, "finished", "failed", timeout_s=30)["status"] == "finished"


def test_a_failing_child_fails_the_parent_naming_it(api: ServedApp, start_pool: Callable[..., PoolProcess]) -> None:
    start_pool(2)
    parent = submit(api, "date_partitions", {"start_date": "2024-02-01", "end_date": "2024-02-03",
                                             "rows_per_day": 3, "fail_on": "2024-02-02"})
    done = wait_status(api, parent, "failed", "finished", timeout_s=30)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "ChildJobError"
    assert f"child job {parent}-c1 (date_partitions) ended failed" in done["error"]["message"]
    assert "no data for 2024-02-02" in done["error"]["message"]
    statuses = {c["job_id"]: c["status"] for c in done["children"]}
    assert statuses == {f"{parent}-c0": "finished", f"{parent}-c1": "failed", f"{parent}-c2": "finished"}


def test_canceling_the_parent_cancels_its_children(api: ServedApp, start_pool: Callable[..., PoolProcess]) -> None:
    start_pool(2)
    parent = submit(api, "date_partitions", {"start_date": "2024-03-01", "end_date": "2024-03-05",
                                             "rows_per_day": 100, "delay_s": 0.1})
    wait_status(api, parent, "waiting")
    wait_for(lambda: any(c["status"] == "started" for c in view(api, parent)["children"]),
             what="a child to start")
    status, answer = api.request("POST", f"/execution/cancel?job_id={parent}", {"reason": "wrong dates"})
    assert status == 200 and answer["status"] == "canceled"
    assert sorted(answer["children_canceled"]) == [f"{parent}-c{n}" for n in range(5)]

    def all_ended() -> list[dict] | None:
        children = view(api, parent)["children"]
        return children if all(c["status"] in ENDED for c in children) else None

    children = wait_for(all_ended, timeout_s=20, what="every child to end")
    assert {c["status"] for c in children} <= {"canceled", "stopped"}, children
    assert "stopped" in {c["status"] for c in children}, "the running children were stopped"
    assert view(api, f"{parent}-c4")["canceled_by"] == f"parent job {parent}"
    assert view(api, parent)["status"] == "canceled"

