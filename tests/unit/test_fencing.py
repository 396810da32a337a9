"""Fencing: a run writes only while it holds the lease on its record, and never re-creates a record that is gone."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from collector.config import Config
from collector.errors import JobFailedError, LeaseLostError
from collector.run import runner
from collector.run.context import RunContext
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store import starts
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from collector.workflows.reaper import Reaper, beat, beat_child


def submit(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry) -> str:
    submitter = Submitter(connection=fake_redis, config=config, registry=registry)
    return submitter.submit({"platform_id": "demo", "settings": {"rows": 2}})["job_id"]


def take_over(connection: fakeredis.FakeRedis, store: JobStore, job_id: str) -> None:
    """What another attempt's start writes: its own lease token, worker and attempt."""
    key = store.keys.job(job_id)
    connection.hset(key, mapping={"lease": "another-attempt", "worker": "w2", "status": "started"})
    connection.hincrby(key, "attempt", 1)


class Scripted:
    """A platform whose `_run` is the test's function."""

    def __init__(self, run: Callable[[Any], Any]) -> None:
        self._run = run


def run_scripted(monkeypatch: pytest.MonkeyPatch, runtime: Runtime, job_id: str,
                 run: Callable[[Any], Any]) -> None:
    monkeypatch.setattr(runner, "_build", lambda *args: Scripted(run))
    execute(job_id, runtime)


def test_a_run_whose_job_was_taken_over_stops_at_its_next_progress_and_writes_nothing(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = submit(fake_redis, unit_config, registry)
    store = JobStore(fake_redis, unit_config)
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")
    after: list[str] = []

    def run(ctx: Any) -> Any:
        ctx.progress(1, 4, "first")
        ctx.flush()
        assert store.read(job_id, "progress")["progress"]["message"] == "first", "held: written"
        take_over(fake_redis, store, job_id)
        ctx.flush()  # refused: the record carries another attempt's token
        after.append("flushed")
        ctx.progress(2, 4, "second")  # raises: this run lost its lease
        after.append("went on")
        return {"rows": 2}

    with caplog.at_level(logging.WARNING), pytest.raises(JobFailedError, match="lost its lease"):
        run_scripted(monkeypatch, runtime, job_id, run)
    assert after == ["flushed"], "stopped at the first ctx call after the loss"
    assert runtime.outcome is not None and runtime.outcome.status == "superseded"
    record = store.read(job_id)
    assert record["status"] == "started" and record["worker"] == "w2" and record["attempt"] == 2
    assert record["progress"]["message"] == "first", "the stale run's later progress was refused"
    assert "ended_at" not in record and "error" not in record
    assert [e["type"] for e in store.events(job_id)] == ["queued", "started"], "no end, no stale event"
    assert any("attempt 1 lost its lease" in r.getMessage() for r in caplog.records)


def test_a_job_started_under_another_lease_is_not_run_and_its_record_is_left_alone(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker frozen past its pool's death starts a job it took before the freeze, which the sweep queued again
    and another worker started meanwhile: the start is refused, nothing runs, the record is the other attempt's."""
    job_id = submit(fake_redis, unit_config, registry)
    store = JobStore(fake_redis, unit_config)
    take_over(fake_redis, store, job_id)
    key = store.keys.job(job_id)
    before = fake_redis.hgetall(key), fake_redis.lrange(store.keys.events(job_id), 0, -1)
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")
    ran: list[str] = []
    with pytest.raises(JobFailedError, match="held by another attempt"):
        run_scripted(monkeypatch, runtime, job_id, lambda ctx: ran.append("ran"))
    assert ran == [] and runtime.outcome is not None and runtime.outcome.status == "superseded"
    assert (fake_redis.hgetall(key), fake_redis.lrange(store.keys.events(job_id), 0, -1)) == before
    # The same start sent twice (its first answer lost on the way) is taken: the lease is this attempt's own.
    fake_redis.hset(key, "status", "queued")
    once = {"fields": ("status",), "values": {"status": "started", "lease": "mine"}, "event": {"type": "started"}}
    assert starts.start(fake_redis, store.keys, job_id, **once)[1] != starts.REFUSED
    assert starts.start(fake_redis, store.keys, job_id, **once)[1] != starts.REFUSED
    # Anything but `queued` (or this lease's own start) refuses, and of the worker's writes only its LREMs apply:
    # the job leaves its claims; RQ's side and the record stay the other attempt's.
    for status in ("finished", "canceled", "waiting", "scheduled", "deferred"):
        fake_redis.hset(key, "status", status)
        fake_redis.rpush("claims", job_id)
        before = [(("HSET", "rq-side", "status", "started"), {}), (("LREM", "claims", 1, job_id), {})]
        assert starts.start(fake_redis, store.keys, job_id, before=before, **once)[1] == starts.REFUSED
        assert store.read(job_id, "status")["status"] == status
        assert not fake_redis.exists("rq-side") and fake_redis.llen("claims") == 0


def test_a_stale_run_that_returns_without_a_ctx_call_writes_no_end_and_no_datasets(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = submit(fake_redis, unit_config, registry)
    store = JobStore(fake_redis, unit_config)
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")

    def run(ctx: Any) -> Any:
        ctx.dataset("original", [{"n": 1}])
        take_over(fake_redis, store, job_id)
        return {"rows": 1}

    with pytest.raises(JobFailedError, match="lost its lease"):
        run_scripted(monkeypatch, runtime, job_id, run)
    record = store.read(job_id)
    assert record["status"] == "started" and record["worker"] == "w2" and "result" not in record
    assert fake_redis.get(store.keys.dataset(job_id, "original")) is None
    assert "finished" not in [e["type"] for e in store.events(job_id)]


def test_progress_and_the_end_never_re_create_a_record_deleted_under_a_running_job(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = submit(fake_redis, unit_config, registry)
    store = JobStore(fake_redis, unit_config)
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")
    raised: list[str] = []

    def run(ctx: Any) -> Any:
        fake_redis.delete(store.keys.job(job_id))  # expired, or deleted by an operator
        ctx.flush()
        assert not store.exists(job_id), "a progress write does not re-create it"
        try:
            ctx.progress(1, 2)
        except LeaseLostError as exc:
            raised.append(str(exc))
        return {"rows": 0}  # swallowed the error and returned: still no end is written

    with pytest.raises(JobFailedError):
        run_scripted(monkeypatch, runtime, job_id, run)
    assert raised and "deleted or expired" in raised[0]
    assert not store.exists(job_id)


def test_log_lines_and_cancelled_stop_a_run_once_a_check_finds_the_lease_lost(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = submit(fake_redis, unit_config, registry)
    store = JobStore(fake_redis, unit_config)
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")
    runner.install(runtime)
    seen: list[str] = []

    def run(ctx: Any) -> Any:
        ctx.log.warning("mine")
        assert ctx.lease.held(), "still held"
        take_over(fake_redis, store, job_id)
        assert not ctx.lease.held(), "what the child's beat thread asks every second"
        assert ctx.should_stop
        for call in (lambda: ctx.log.warning("stale"), lambda: ctx.cancelled, lambda: ctx.checkpoint({"n": 1}),
                     lambda: ctx.dataset("original", [])):
            with pytest.raises(LeaseLostError):
                call()
            seen.append("raised")
        return None

    with pytest.raises(JobFailedError):
        run_scripted(monkeypatch, runtime, job_id, run)
    assert seen == ["raised"] * 4
    logged = [e.get("message") for e in store.events(job_id) if e["type"] == "log"]
    assert any("mine" in str(m) for m in logged) and not any("stale" in str(m) for m in logged)
    assert "checkpoint" not in store.read(job_id)


def test_a_context_without_a_lease_writes_as_before(fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    store = JobStore(fake_redis, unit_config)
    ctx = RunContext(job_id="j", platform_id="demo", attempt=1, store=store, interval_s=10.0)
    ctx.progress(1, 2)
    ctx.flush()
    assert store.read("j", "progress")["progress"]["done"] == 1 and not ctx.lease_lost


def test_a_pool_whose_supervisor_is_silent_is_alive_while_a_child_beats(
    fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    beat(fake_redis, unit_config, "A", jobs=[], workers=[])
    beat_child(fake_redis, unit_config, "A")
    reaper = Reaper(fake_redis, unit_config, own_pool="B")
    keys = reaper.keys
    fake_redis.delete(keys.pool("A"))  # the supervisor is frozen: its heartbeat expired
    assert reaper.dead_pools(0.0) == [] and reaper.dead_pools(1000.0) == [], "its child still shows life"
    fake_redis.delete(keys.pool_children("A"))  # and now no child beats either
    assert reaper.dead_pools(2000.0) == []  # first look: a suspect
    assert reaper.dead_pools(2000.0 + 60) == ["A"]


def test_the_end_sent_twice_after_a_lost_answer_is_not_taken_for_a_lost_lease(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = submit(fake_redis, unit_config, registry)
    store = JobStore(fake_redis, unit_config)
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")
    leases: list[Any] = []

    def run(ctx: Any) -> Any:
        leases.append(ctx.lease)
        return {"rows": 0}

    run_scripted(monkeypatch, runtime, job_id, run)
    assert store.read(job_id, "status")["status"] == "finished"
    lease = leases[0]
    assert lease.held() and lease.lost is None, "a check after the end (the beat thread's) is no loss"
    events_before = len(store.events(job_id))
    assert lease.write(lambda pipe: store.event(job_id, "finished", pipe))  # the end's resend: answered as written
    assert len(store.events(job_id)) == events_before, "and applied once"
