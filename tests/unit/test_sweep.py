"""The sweep for open jobs nothing holds, on fakeredis: found on one sweep, settled on the next if unchanged."""

from __future__ import annotations

import dataclasses
import json
import time

import fakeredis
import pytest

from collector.config import Config
from collector.specs.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from collector.workflows.claims import beat, claim
from collector.workflows.recovery import enqueue_due, recover
from collector.workflows.sweep import Sweep

QUEUE = "rq:queue:collector"


@pytest.fixture
def config(unit_config: Config) -> Config:
    return dataclasses.replace(unit_config, sweep_interval_s=10.0)


def submit(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry) -> str:
    body = {"platform_id": "demo", "settings": {"rows": 1}}
    return Submitter(connection=fake_redis, config=config, registry=registry).submit(body)["job_id"]


def test_a_queued_job_in_no_queue_is_found_then_put_back_at_the_head(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    lost, kept = submit(fake_redis, config, registry), submit(fake_redis, config, registry)
    fake_redis.lrem(QUEUE, 0, lost)
    sweep = Sweep(fake_redis, config)
    later = time.time() + 60
    assert sweep.sweep(now=later) == {}, "seen once: not settled yet"
    assert json.loads(fake_redis.hget("collector:sweep:strays", lost))["fingerprint"]["status"] == "queued"
    assert not fake_redis.hexists("collector:sweep:strays", kept), "a job in the queue is no stray"
    assert sweep.sweep(now=later + 10) == {lost: "queued"}
    assert fake_redis.lrange(QUEUE, 0, -1) == [lost.encode(), kept.encode()], "back at the head"
    record = JobStore(fake_redis, config).read(lost)
    assert record["status"] == "queued" and record["attempt"] == 0
    assert not fake_redis.exists("collector:sweep:strays")
    assert sweep.sweep(now=later + 20) == {}, "found in the queue now"


def test_a_job_that_moved_between_two_sweeps_is_left_alone(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, config, registry)
    fake_redis.lrem(QUEUE, 0, job_id)
    sweep = Sweep(fake_redis, config)
    later = time.time() + 60
    sweep.sweep(now=later)
    fake_redis.hset(f"collector:job:{job_id}", mapping={"status": "started", "attempt": "1", "pool": "p",
                                                        "worker": "p.0.1", "started_at": "2026-01-01T00:00:00Z"})
    fake_redis.set("collector:pool:p", json.dumps({"jobs": [job_id], "workers": ["p.0.1"]}))
    fake_redis.hset("collector:pools", "p", "2026-01-01T00:00:00Z")
    assert sweep.sweep(now=later + 10) == {}, "running in a live pool's slot"
    fake_redis.set("collector:pool:p", json.dumps({"jobs": [], "workers": ["p.0.1"]}))
    assert sweep.sweep(now=later + 20) == {}, "a new fingerprint is only seen once"
    settled = sweep.sweep(now=later + 30)
    assert settled == {job_id: "scheduled"}, "started, held by no slot of its live pool: retried"
    record = JobStore(fake_redis, config).read(job_id)
    assert record["deaths"] == 1 and "found by the sweep" in record["error"]["message"]


def test_jobs_a_silent_pool_held_are_left_to_the_pool_reaper_and_young_jobs_to_their_workers(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, config, registry)
    fake_redis.lrem(QUEUE, 0, job_id)
    fake_redis.hset(f"collector:job:{job_id}", mapping={"status": "started", "pool": "silent", "attempt": "1"})
    fake_redis.hset("collector:pools", "silent", "2026-01-01T00:00:00Z")
    sweep = Sweep(fake_redis, config)
    later = time.time() + 60
    assert sweep.sweep(now=later) == {} and sweep.sweep(now=later + 10) == {}
    young = submit(fake_redis, config, registry)
    fake_redis.lrem(QUEUE, 0, young)
    assert sweep.sweep(now=time.time()) == {} and not fake_redis.hexists("collector:sweep:strays", young)


def test_one_process_sweeps_at_a_time_and_zero_turns_the_sweep_off(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, config, registry)
    fake_redis.lrem(QUEUE, 0, job_id)
    fake_redis.zadd("collector:jobs:open", {job_id: 1.0})  # old enough to be swept now
    first, second = Sweep(fake_redis, config), Sweep(fake_redis, config)
    first.tick()
    assert fake_redis.hexists("collector:sweep:strays", job_id)
    fake_redis.delete("collector:sweep:strays")
    second.tick()
    assert not fake_redis.exists("collector:sweep:strays"), "the lease of the first sweep still holds"
    fake_redis.delete("collector:sweep")
    Sweep(fake_redis, dataclasses.replace(config, sweep_interval_s=0)).tick()
    assert not fake_redis.exists("collector:sweep:strays", "collector:sweep")


def test_an_expired_record_leaves_the_open_jobs(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, config, registry)
    assert 0 < fake_redis.ttl(f"collector:job:{job_id}") <= config.open_record_ttl_s, "the safety net"
    assert 0 < fake_redis.ttl(f"collector:job:{job_id}:events:list") <= config.open_record_ttl_s
    fake_redis.delete(f"collector:job:{job_id}")
    Sweep(fake_redis, config).sweep(now=time.time() + 60)
    assert fake_redis.zscore("collector:jobs:open", job_id) is None


def test_a_job_to_put_back_without_its_rq_job_fails_instead_of_waiting_for_nothing(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, config, registry)
    fake_redis.lrem(QUEUE, 0, job_id)
    fake_redis.delete(f"rq:job:{job_id}")
    assert recover(fake_redis, config, job_id, kind="died", cause="lost") == "failed"
    record = JobStore(fake_redis, config).read(job_id)
    assert record["status"] == "failed" and "RQ's job is gone" in record["error"]["message"]
    assert fake_redis.zscore("collector:jobs:open", job_id) is None and fake_redis.llen(QUEUE) == 0


def test_a_job_in_the_claims_of_a_registered_worker_waits_for_its_supervisor(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, config, registry)
    fake_redis.lmove(QUEUE, f"{QUEUE}:intermediate:p.0.1")  # taken by a child that died; not yet settled
    fake_redis.sadd("rq:workers", "rq:worker:p.0.1")
    fake_redis.hset("rq:worker:p.0.1", "state", "busy")
    sweep = Sweep(fake_redis, config)
    later = time.time() + 60
    assert sweep.sweep(now=later) == {} and sweep.sweep(now=later + 10) == {}
    fake_redis.delete("rq:worker:p.0.1")  # its registration expired without anyone settling its claims
    assert sweep.sweep(now=later + 20) == {}
    assert sweep.sweep(now=later + 30) == {job_id: "queued"}
    assert fake_redis.lrange(QUEUE, 0, -1) == [job_id.encode()]


def test_a_retry_due_without_its_rq_job_fails_instead_of_staying_scheduled(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, config, registry)
    fake_redis.lrem(QUEUE, 0, job_id)
    fake_redis.hset(f"collector:job:{job_id}", mapping={"status": "scheduled"})
    fake_redis.zadd("rq:scheduled:collector", {job_id: 1})
    fake_redis.delete(f"rq:job:{job_id}")
    assert enqueue_due(fake_redis, config) == 0
    record = JobStore(fake_redis, config).read(job_id)
    assert record["status"] == "failed" and "RQ's job is gone" in record["error"]["message"]
    assert fake_redis.zscore("rq:scheduled:collector", job_id) is None
    assert fake_redis.zscore("collector:jobs:open", job_id) is None


def test_a_job_claimed_by_a_live_process_is_left_to_it_and_settled_once_its_beat_is_gone(
    fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, config, registry)
    claim(fake_redis, config, job_id, by="laptop.1")
    fake_redis.hset(f"collector:job:{job_id}", mapping={"status": "started", "attempt": "1",
                                                        "worker": "laptop.1", "started_at": "2026-01-01T00:00:00Z"})
    assert fake_redis.ttl(f"collector:claimed:{job_id}") > 0, "a claim starts beating at once"
    sweep = Sweep(fake_redis, config)
    later = time.time() + 60
    for step in range(3):
        beat(fake_redis, config, job_id, by="laptop.1")
        assert sweep.sweep(now=later + 10 * step) == {}, "its claiming process still beats"
    fake_redis.delete(f"collector:claimed:{job_id}")  # the process was lost: its beat expired
    assert sweep.sweep(now=later + 30) == {}, "seen once"
    assert sweep.sweep(now=later + 40) == {job_id: "scheduled"}, "then retried as after a worker's death"
