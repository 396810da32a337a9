"""The runner called directly: records, datasets, progress coalescing, failures with masked text."""

from __future__ import annotations

import fakeredis
import pytest

from collector.config import Config
from collector.errors import JobFailedError
from collector.run.context import RunContext
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter


def submit(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry, settings: dict) -> str:
    submitter = Submitter(connection=fake_redis, config=config, registry=registry)
    return submitter.submit({"platform_id": "demo", "settings": settings})["job_id"]


def test_a_job_runs_to_finished_with_result_progress_and_datasets(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, unit_config, registry, {"rows": 3})
    result = execute(job_id, Runtime(unit_config, fake_redis, registry, worker_name="w1"))
    assert result == {"rows": 3}
    store = JobStore(fake_redis, unit_config)
    view = store.view(job_id)
    assert view is not None
    assert view["status"] == "finished" and view["attempt"] == 1 and view["worker"] == "w1"
    assert view["progress"]["done"] == 3 and view["progress"]["percent"] == 100.0
    assert view["datasets"] == {
        "original": {"rows": 3, "bytes": len(b'[{"n": 1, "value": 1}, {"n": 2, "value": 4}, {"n": 3, "value": 9}]')},
        "processed": view["datasets"]["processed"],
    }
    full = store.view(job_id, full=True)
    assert full is not None and full["datasets"]["original"][2] == {"n": 3, "value": 9}
    assert 0 < fake_redis.ttl(store.keys.job(job_id)) <= unit_config.record_ttl_s


def test_a_failing_job_ends_failed_with_its_error_and_longer_ttl(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, unit_config, registry, {"rows": 5, "fail_at": 3})
    with pytest.raises(JobFailedError, match="demo failure at row 3"):
        execute(job_id, Runtime(unit_config, fake_redis, registry))
    store = JobStore(fake_redis, unit_config)
    view = store.view(job_id)
    assert view is not None and view["status"] == "failed"
    assert view["error"]["type"] == "FatalError" and "row 3" in view["error"]["message"]
    assert view["progress"]["done"] == 2
    assert fake_redis.ttl(store.keys.job(job_id)) > unit_config.record_ttl_s


def test_progress_in_a_tight_loop_is_coalesced(fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    store = JobStore(fake_redis, unit_config)
    writes = []
    original = store.update
    store.update = lambda *a, **k: (writes.append(a), original(*a, **k))[1]  # type: ignore[method-assign]
    ctx = RunContext(job_id="j", platform_id="demo", attempt=1, store=store, interval_s=10.0)
    for n in range(100_000):
        ctx.progress(n, 100_000)
    assert writes == []
    ctx.flush()
    assert len(writes) == 1 and store.read("j", "progress")["progress"]["done"] == 99_999


def test_eta_comes_from_the_rate_so_far(fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    ctx = RunContext(job_id="j", platform_id="demo", attempt=1, store=JobStore(fake_redis, unit_config),
                     interval_s=10.0)
    ctx._started -= 10  # ten seconds in
    ctx.progress(25, 100)
    state = ctx.progress_state()
    assert state["percent"] == 25.0 and state["eta_s"] == pytest.approx(30.0, rel=0.05)


def test_dataset_names_are_checked(fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    ctx = RunContext(job_id="j", platform_id="demo", attempt=1, store=JobStore(fake_redis, unit_config),
                     interval_s=1.0)
    with pytest.raises(ValueError, match="'original' or 'processed'"):
        ctx.dataset("raw", [])
