"""No pickle anywhere: a pickled job planted in Redis is never unpickled by the dashboard, and workers refuse
any function but collector's own without importing it."""

from __future__ import annotations

import base64
import pathlib
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Callback, Queue
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.conftest import PoolProcess, ServedApp, wait_for

XHR = {"X-Requested-With": "XMLHttpRequest"}
REGISTRIES = ("failed", "started", "finished", "canceled", "deferred", "scheduled")


class Touch:
    """Unpickling this creates the file at `path`: the proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def plant(client: redis.Redis, job_id: str, markers: Path) -> None:
    """A job hash as RQ's default (pickle) serializer would write it, every pickled field a trap."""
    now = "2026-01-01T00:00:00.000000Z"
    client.hset(f"rq:job:{job_id}", mapping={
        "data": pickle.dumps(Touch(markers / f"{job_id}-data")),
        "meta": pickle.dumps(Touch(markers / f"{job_id}-meta")),
        "result": pickle.dumps(Touch(markers / f"{job_id}-result")),
        "status": "failed",
        "origin": "collector",
        "description": "planted",
        "created_at": now, "enqueued_at": now, "started_at": now, "ended_at": now,
        "exc_info": "planted",
    })
    # RQ 2 keeps results in a stream; the dashboard's lists and job view read the latest entry.
    client.xadd(f"rq:results:{job_id}", {
        "type": "1", "worker_name": "w",
        "return_value": base64.b64encode(pickle.dumps(Touch(markers / f"{job_id}-stream"))),
    })


@pytest.fixture
def planted(redis_client: redis.Redis, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """One planted job in the queue and in each of the queue's registries."""
    markers = tmp_path / "markers"
    markers.mkdir()
    queue = Queue("collector", connection=redis_client, serializer=JSONSerializer)
    redis_client.sadd("rq:queues", queue.key)
    ids = {"queued": "planted-queued"}
    redis_client.rpush(queue.key, ids["queued"])
    registries = {
        "failed": queue.failed_job_registry, "started": queue.started_job_registry,
        "finished": queue.finished_job_registry, "canceled": queue.canceled_job_registry,
        "deferred": queue.deferred_job_registry, "scheduled": queue.scheduled_job_registry,
    }
    far = time.time() + 3600
    for name, registry in registries.items():
        ids[name] = f"planted-{name}"
        member = f"{ids[name]}:exec1" if name == "started" else ids[name]  # RQ 2: started entries carry an execution
        redis_client.zadd(registry.key, {member: far})
    ids["failed-2"] = "planted-failed-2"  # for "requeue all", after the first one was requeued alone
    redis_client.zadd(queue.failed_job_registry.key, {ids["failed-2"]: far})
    for job_id in ids.values():
        plant(redis_client, job_id, markers)
    return ids, markers


def untouched(markers: Path, step: str) -> None:
    found = sorted(p.name for p in markers.iterdir())
    assert not found, f"{step} unpickled planted data: {found}"


def test_a_planted_pickled_job_is_never_unpickled_by_any_dashboard_page_or_action(
    served: ServedApp, planted: tuple[dict[str, str], Path]
) -> None:
    ids, markers = planted
    pages = ["/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/view/jobs",
             "/rq/0/data/queues.json", "/rq/0/data/workers.json"]
    for registry in ("queued", *REGISTRIES):
        pages.append(f"/rq/0/view/jobs/collector/{registry}/8/asc/1")
        pages.append(f"/rq/0/data/jobs/collector/{registry}/8/asc/1.json")
    for job_id in ids.values():
        pages += [f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"]
    for path in pages:
        status, body = served.request("GET", path)
        untouched(markers, path)
        assert status == 200, (path, body)

    # The job view shows the pickled fields as unreadable instead of failing or unpickling them.
    status, body = served.request("GET", f"/rq/0/data/job/{ids['failed']}.json")
    assert status == 200
    assert "unreadable" in str(body["result"]) and "unreadable" in body["metadata"]
    status, body = served.request("GET", "/rq/0/data/jobs/collector/failed/8/asc/1.json")
    assert sorted(job["id"] for job in body["jobs"]) == [ids["failed"], ids["failed-2"]]

    actions = [f"/rq/job/{ids['failed']}/requeue", "/rq/requeue/collector", "/rq/queue/collector/compact",
               f"/rq/job/{ids['finished']}/delete"]
    actions += [f"/rq/queue/collector/{registry}/empty" for registry in ("queued", *REGISTRIES)]
    for path in actions:
        status, body = served.request("POST", path, raw=b"", headers=XHR)
        untouched(markers, path)
        if path.endswith("/requeue"):  # Requeue retries by hand: a job with no collector record cannot be, and says so
            assert status == 404 and body["error"] == "not_found", (path, body)
            continue
        assert status == 200, (path, body)
        if path == "/rq/requeue/collector":  # Requeue All skips what cannot be retried
            assert body["count"] == 0 and sorted(body["skipped"]) == sorted([ids["failed"], ids["failed-2"]])


def test_an_api_process_never_falls_back_to_pickle(served: ServedApp, redis_client: redis.Redis,
                                                   tmp_path: Path) -> None:
    """RQ picks pickle wherever a caller names no serializer; in collector's processes that choice refuses."""
    from collector.errors import PickleRefusedError

    plant(redis_client, "planted-direct", tmp_path)
    job = Job.fetch("planted-direct", connection=redis_client)  # no serializer: RQ's default
    with pytest.raises(DeserializationError) as raised:
        _ = job.func_name
    assert isinstance(raised.value.__cause__, PickleRefusedError)
    assert "unserialized" in job.meta  # RQ put aside what it could not read
    with pytest.raises(PickleRefusedError):
        job.get_meta()
    assert not list(tmp_path.glob("planted-direct-*"))


def enqueue_named(redis_client: redis.Redis, func: str, *, job_id: str, **options: object) -> Job:
    queue = Queue("collector", connection=redis_client, serializer=JSONSerializer)
    return queue.enqueue_call(func, args=options.pop("args", ()), job_id=job_id, **options)  # type: ignore[arg-type]


def test_a_worker_refuses_any_function_but_collectors_own_without_importing_it(
    redis_client: redis.Redis, start_pool: Callable[..., PoolProcess], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    queue = Queue("collector", connection=redis_client, serializer=JSONSerializer)
    # A module that is not imported anywhere else, so importing it would be seen in the worker's modules.
    jobs = {
        "os-system": enqueue_named(redis_client, "os.system", job_id="os-system", args=(f"touch {marker}",)),
        "import": enqueue_named(redis_client, "tests.integration.nowhere.run", job_id="import"),
        "callback": queue.enqueue_call(
            "collector.runner.run_job", job_id="callback", on_failure=Callback("os.abort"),
            on_success=Callback("os.abort"),
        ),
    }
    plant(redis_client, "pickled", tmp_path)  # a payload written with pickle, queued
    redis_client.rpush(queue.key, "pickled")
    pool = start_pool(1)
    registry = queue.failed_job_registry
    wait_for(lambda: set(registry.get_job_ids()) >= {*jobs, "pickled"}, what="the forged jobs to be failed")
    for job_id in [*jobs, "pickled"]:
        job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
        assert job.get_status() == "failed"
        text = job.latest_result().exc_string
        assert "collector runs only its own job functions" in text or "DeserializationError" in text, text
    assert not marker.exists() and not list(tmp_path.glob("pickled-*"))
    assert "refused job pickled: its payload is not JSON" in pool.output()
    output = pool.output()
    assert "refused job os-system" in output and "'os.system'" in output
    assert "No module named" not in output  # refused before any import was tried
    assert pool.process.poll() is None  # the pool lives on


def test_a_worker_still_runs_collectors_own_jobs(
    served: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    start_pool(1)
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 3}})
    assert status == 202
    wait_for(lambda: served.request("GET", f"/execution/get?job_id={body['job_id']}")[1]["status"] == "finished",
             what="the demo job to finish")
