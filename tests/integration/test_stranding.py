"""Nothing stranded, clean recovery: jobs a worker took and lost are found and settled, with real worker processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from collector.store.lanes import Taker
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import close, events, make_package, submit, view, wait_status, with_package

QUEUE = "rq:queue:collector"


class Kit:
    """The API and pools running the test platforms."""

    def __init__(self, config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess], *,
                 reaper: bool = False) -> None:
        self.config, self.tmp_path, self._start_pool = config, tmp_path, start_pool
        self.served = ServedApp(create_app(config, reaper=reaper))

    def pool(self, size: int = 1, **changes: Any) -> PoolProcess:
        env = {f"COLLECTOR_{name.upper()}": str(value) for name, value in changes.items()}
        return self._start_pool(size, dataclasses.replace(self.config, **changes), PYTHONPATH=str(self.tmp_path),
                                **env)


@pytest.fixture
def kit(config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    make_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    kit = Kit(with_package(config), tmp_path, start_pool)
    yield kit
    close(kit.served)


def child_pid(redis_client: redis.Redis, worker: str) -> int:
    return int(redis_client.hget(f"rq:worker:{worker}", "pid"))


def wait_frozen(redis_client: redis.Redis, pid: int) -> None:
    """Freeze the child `pid` once it waits for a job (on the lanes' wake-up list)."""
    wait_for(lambda: any(c.get("cmd") == "blpop" for c in redis_client.client_list()),
             what="the child to wait for a job (on the lanes' wake-up list)")
    os.kill(pid, signal.SIGSTOP)


def take_for(redis_client: redis.Redis, worker: str, job_id: str) -> None:
    """The frozen child's take ran on the server and its answer never reached it: the job is in its claims and the
    child never sees it (the child's own take script, run for it while it is frozen)."""
    claims = f"{QUEUE}:intermediate:{worker}"
    taker = Taker([QUEUE + ":high", QUEUE, QUEUE + ":low"], claims=claims, wake=QUEUE + ":wake", age_s=0,
                  job_prefix="rq:job:")
    assert taker.take_once(redis_client) == (QUEUE.encode(), job_id.encode())
    assert redis_client.lrange(claims, 0, -1) == [job_id.encode()]


def kinds(served: ServedApp, job_id: str) -> list[str]:
    return [e["type"] for e in events(served, job_id)]


def test_a_child_killed_between_taking_a_job_and_noting_it_gives_the_job_back(
    kit: Kit, redis_client: redis.Redis
) -> None:
    pool = kit.pool(1)
    [worker] = pool.worker_names()
    pid = child_pid(redis_client, worker)
    wait_frozen(redis_client, pid)
    try:
        job_id = submit(kit.served, "flaky", {"failures": 0})
        claims = f"{QUEUE}:intermediate:{worker}"
        take_for(redis_client, worker, job_id)
        assert view(kit.served, job_id)["status"] == "queued" and redis_client.llen(QUEUE) == 0
    finally:
        os.kill(pid, signal.SIGKILL)
    record = wait_status(kit.served, job_id, "finished", "failed", timeout_s=30)
    assert record["status"] == "finished" and record["attempt"] == 1, record
    assert record["worker"] != worker
    found = kinds(kit.served, job_id)
    assert found[:3] == ["queued", "worker_lost", "requeued"], found
    requeued = next(e for e in events(kit.served, job_id) if e["type"] == "requeued")
    assert requeued["reason"] == "never started" and "signal 9" in requeued["cause"]
    assert not redis_client.exists(claims), "the dead child's claims are forgotten"
    assert redis_client.lpos(f"{QUEUE}:intermediate", job_id) is None
    assert pool.process.poll() is None


def test_a_retry_that_succeeds_clears_the_earlier_error_and_its_events_keep_it(kit: Kit) -> None:
    kit.pool(1)
    job_id = submit(kit.served, "flaky", {"failures": 1}, retry={"max": 2, "backoff": 0.1, "jitter": 0})
    record = wait_status(kit.served, job_id, "finished", "failed", timeout_s=30)
    assert record["status"] == "finished" and record["attempt"] == 2, record
    assert "error" not in record and "retry_at" not in record, record
    [retry] = [e for e in events(kit.served, job_id) if e["type"] == "retry_scheduled"]
    assert retry["error"]["type"] == "TransientError" and "attempt 1" in retry["error"]["message"]


def test_recovering_a_job_clears_rqs_intermediate_list_and_failed_registry(
    kit: Kit, redis_client: redis.Redis
) -> None:
    kit.pool(1)
    job_id = submit(kit.served, "sleeper", {"seconds": 3}, retry={"max": 1, "backoff": 0.1, "jitter": 0})
    first = wait_status(kit.served, job_id, "started")
    # What a worker of another version, or RQ's own cleanup, may have left behind for this job.
    redis_client.rpush(f"{QUEUE}:intermediate", job_id)
    redis_client.zadd("rq:failed:collector", {job_id: 9e9})
    os.kill(child_pid(redis_client, first["worker"]), signal.SIGKILL)
    record = wait_status(kit.served, job_id, "finished", "failed", timeout_s=30)
    assert record["status"] == "finished" and record["attempt"] == 2 and record["deaths"] == 1, record
    assert "error" not in record, "the dead worker's error went with the successful retry"
    assert redis_client.lpos(f"{QUEUE}:intermediate", job_id) is None
    assert redis_client.zscore("rq:failed:collector", job_id) is None
    assert redis_client.hget(f"rq:job:{job_id}", "status") == b"finished"
    assert any(e["type"] == "worker_lost" for e in events(kit.served, job_id))


def test_a_retry_after_a_worker_death_goes_to_the_head_of_the_queue(kit: Kit, redis_client: redis.Redis) -> None:
    kit.pool(1)
    job_id = submit(kit.served, "sleeper", {"seconds": 30}, retry={"max": 1, "backoff": 0, "jitter": 0})
    first = wait_status(kit.served, job_id, "started")
    backlog = [submit(kit.served, "sleeper", {"seconds": 1.5}) for _ in range(4)]
    os.kill(child_pid(redis_client, first["worker"]), signal.SIGKILL)
    again = wait_for(lambda: (r := view(kit.served, job_id))["attempt"] == 2 and r["status"] == "started" and r,
                     timeout_s=20, what="the retry to start")
    records = [view(kit.served, other) for other in backlog]
    ahead = [r for r in records if r.get("started_at") and r["started_at"] < again["started_at"]]
    # Behind the backlog it would start after all four (6 s of work); at the head, at most the one the new worker
    # may have taken before the retry was requeued runs first.
    assert len(ahead) <= 1, [(r["job_id"], r["status"], r.get("started_at")) for r in records]
    requeued = [e for e in events(kit.served, job_id) if e["type"] == "requeued"]
    assert requeued and requeued[-1]["reason"] == "retry due"


@pytest.fixture
def sweeping(config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess],
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    """The kit with an API whose reaper sweeps every second (COLLECTOR_SWEEP_INTERVAL_S=1)."""
    make_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    kit = Kit(with_package(config, sweep_interval_s=1.0, reap_interval_s=0.2), tmp_path, start_pool, reaper=True)
    yield kit
    close(kit.served)


def test_the_sweep_puts_a_queued_job_that_is_in_no_queue_back_at_the_head(
    sweeping: Kit, redis_client: redis.Redis
) -> None:
    job_id = submit(sweeping.served, "flaky", {"failures": 0})
    assert 0 < redis_client.ttl(f"collector:job:{job_id}") <= sweeping.config.open_record_ttl_s, "the safety net"
    assert redis_client.lrem(QUEUE, 0, job_id) == 1  # lost: the queue emptied, or a worker gone with it
    requeued = wait_for(lambda: [e for e in events(sweeping.served, job_id) if e["type"] == "requeued"],
                        timeout_s=20, what="the sweep to find the stray job")
    assert redis_client.lindex(QUEUE, 0) == job_id.encode(), "back at the head of the queue"
    assert requeued[0]["reason"] == "never started" and "found by the sweep" in requeued[0]["cause"]
    lost = [e for e in events(sweeping.served, job_id) if e["type"] == "worker_lost"]
    assert len(lost) == 1, "settled once"
    sweeping.pool(1)
    record = wait_status(sweeping.served, job_id, "finished", "failed", timeout_s=20)
    assert record["status"] == "finished" and record["attempt"] == 1, record
    assert 0 < redis_client.ttl(f"collector:job:{job_id}") <= sweeping.config.record_ttl_s
    assert redis_client.zscore("collector:jobs:open", job_id) is None, "an ended job leaves the open jobs"


def test_the_sweep_retries_a_started_job_no_live_worker_holds(sweeping: Kit, redis_client: redis.Redis) -> None:
    job_id = submit(sweeping.served, "flaky", {"failures": 0}, retry={"max": 2, "backoff": 0.1, "jitter": 0})
    # What a worker whose pool was lost (and already forgotten) leaves behind: `started`, in no queue, no slot.
    with redis_client.pipeline() as pipe:
        pipe.lrem(QUEUE, 0, job_id)
        pipe.hset(f"collector:job:{job_id}", mapping={"status": "started", "attempt": "1", "worker": "gone.1.1",
                                                      "pool": "gone", "started_at": "2026-01-01T00:00:00.000Z"})
        pipe.execute()
    sweeping.pool(1, sweep_interval_s=1.0)
    record = wait_status(sweeping.served, job_id, "finished", "failed", timeout_s=30)
    assert record["status"] == "finished" and record["attempt"] == 2 and record["deaths"] == 1, record
    [lost] = [e for e in events(sweeping.served, job_id) if e["type"] == "worker_lost"]
    assert "no live worker held it" in lost["cause"] and "found by the sweep" in lost["cause"]
    assert not redis_client.exists("collector:sweep:strays")


def test_the_sweep_leaves_jobs_that_wait_run_or_are_scheduled_alone(sweeping: Kit, redis_client: redis.Redis) -> None:
    pool = sweeping.pool(1, sweep_interval_s=1.0)
    running = submit(sweeping.served, "sleeper", {"seconds": 6})
    wait_status(sweeping.served, running, "started")
    waiting = [submit(sweeping.served, "flaky", {"failures": 0}) for _ in range(2)]
    retried = submit(sweeping.served, "flaky", {"failures": 1}, retry={"max": 1, "backoff": 5, "jitter": 0})
    for job_id in (running, *waiting, retried):
        wait_status(sweeping.served, job_id, "finished", timeout_s=40)
        assert "worker_lost" not in kinds(sweeping.served, job_id), job_id
    assert pool.process.poll() is None


def test_a_dead_pools_reaper_gives_back_the_jobs_its_children_had_taken(
    config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess], monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis,
) -> None:
    make_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    kit = Kit(with_package(config, sweep_interval_s=0.0, reap_interval_s=0.2), tmp_path, start_pool, reaper=True)
    try:
        pool = kit.pool(1, pool_heartbeat_ttl_s=2, sweep_interval_s=0.0)
        [worker] = pool.worker_names()
        pid = child_pid(redis_client, worker)
        wait_frozen(redis_client, pid)
        job_id = submit(kit.served, "flaky", {"failures": 0})
        take_for(redis_client, worker, job_id)
        pool.process.kill()  # the whole pool: its children die with it
        pool.process.wait(10)
        requeued = wait_for(lambda: [e for e in events(kit.served, job_id) if e["type"] == "requeued"],
                            timeout_s=30, what="the reaper to give the job back")
        assert requeued[0]["reason"] == "never started" and f"worker pool {pool_name(worker)}" in requeued[0]["cause"]
        assert not redis_client.exists(f"{QUEUE}:intermediate:{worker}")
        kit.pool(1)
        record = wait_status(kit.served, job_id, "finished", "failed", timeout_s=20)
        assert record["status"] == "finished" and record["attempt"] == 1, record
    finally:
        close(kit.served)


def pool_name(worker: str) -> str:
    """`host.pid` of the worker `host.pid.slot.generation`."""
    return worker.rsplit(".", 2)[0]


@pytest.fixture
def unlimited(config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess],
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    """The kit with no submit rate limit, and the API's reaper on (it sweeps every 2 s)."""
    make_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    kit = Kit(with_package(config, submits_per_minute=0, sweep_interval_s=2.0), tmp_path, start_pool, reaper=True)
    yield kit
    close(kit.served)


def test_under_repeated_kill_9_of_children_every_job_ends_once(unlimited: Kit, redis_client: redis.Redis) -> None:
    kit = unlimited
    pool = kit.pool(2)
    jobs = [submit(kit.served, "sleeper", {"seconds": 0.05}, retry={"max": 5, "backoff": 0.05, "jitter": 0})
            for _ in range(150)]
    killed = 0
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        names = pool.worker_names()
        pids = [int(p) for name in names if (p := redis_client.hget(f"rq:worker:{name}", "pid"))]
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(random.choice(pids), signal.SIGKILL)
                killed += 1
        time.sleep(0.7)
    assert killed >= 10

    def open_jobs() -> list[str]:
        return [j for j in jobs if view(kit.served, j)["status"] not in ("finished", "failed")]

    left = wait_for(lambda: not open_jobs() or None, timeout_s=120, what="every job to end") and open_jobs()
    assert left == []
    for job_id in jobs:
        ends = [e["type"] for e in events(kit.served, job_id) if e["type"] in ("finished", "failed", "stopped")]
        assert len(ends) == 1, (job_id, kinds(kit.served, job_id))
    assert redis_client.llen(f"{QUEUE}:intermediate") == 0
    assert pool.process.poll() is None
