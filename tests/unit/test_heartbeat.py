"""The pool's RQ worker: heartbeats in one round trip, repeats within a second and repeated states skipped."""

from __future__ import annotations

import fakeredis
import pytest
from redis.connection import AbstractConnection
from rq.serializers import JSONSerializer

from collector.config import Config
from collector.pool import heartbeat
from collector.pool.children import CollectorWorker
from collector.run.runner import Runtime, install
from collector.specs.registry import Registry
from collector.store.claiming_queue import claiming_queue
from collector.store.records import JobStore
from collector.store.rq import RUN_FUNCTION
from collector.submit.submitter import Submitter


def test_repeated_heartbeats_and_states_cost_no_round_trip(
    fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = CollectorWorker(["q"], connection=fake_redis, name="w1", serializer=JSONSerializer)
    fake_redis.ping()  # the connection's handshake is not what is counted
    sent: list[str] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, *args: object, **kwargs: object) -> None:
        sent.append("trip")  # one send per command, or per pipeline
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)

    def trips(action: object) -> int:
        before = len(sent)
        action()  # type: ignore[operator]
        return len(sent) - before

    assert trips(worker.heartbeat) == 1  # HSET and EXPIRE in one round trip
    monkeypatch.undo()
    assert fake_redis.ttl(worker.key) > 0
    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    assert trips(worker.heartbeat) == 0  # a repeat within HEARTBEAT_MIN_GAP_S is skipped
    assert trips(lambda: worker.heartbeat(timeout=90)) == 1  # an explicit TTL always goes out
    worker._last_beat_at -= heartbeat.HEARTBEAT_MIN_GAP_S
    assert trips(worker.heartbeat) == 1
    assert trips(lambda: worker.set_state("idle")) == 1
    assert trips(lambda: worker.set_state("idle")) == 0

    def busy_in_a_pipeline() -> None:
        with fake_redis.pipeline() as pipe:
            worker.set_state("busy", pipeline=pipe)
            pipe.execute()

    assert trips(busy_in_a_pipeline) == 1
    assert trips(lambda: worker.set_state("idle")) == 1  # after a pipelined write the state is written again
    monkeypatch.undo()
    assert fake_redis.hget(worker.key, "state") == b"idle" and fake_redis.ttl(worker.key) > 0


def test_a_finished_job_keeps_its_last_heartbeat_without_a_round_trip_of_its_own(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from rq.job import Job

    from collector.run import runner
    from collector.store.events import JobEventsHandler

    monkeypatch.setattr(runner, "_runtime", None)  # restored after the test, as is the logger below
    platforms_logger = logging.getLogger("platforms")
    monkeypatch.setattr(platforms_logger, "handlers", [h for h in platforms_logger.handlers
                                                       if not isinstance(h, JobEventsHandler)])

    job_id = Submitter(connection=fake_redis, config=unit_config, registry=registry).submit(
        {"platform_id": "demo", "settings": {"rows": 2}})["job_id"]
    install(Runtime(unit_config, fake_redis, registry, worker_name="w2"))
    worker = CollectorWorker(["collector"], connection=fake_redis, name="w2", serializer=JSONSerializer)
    assert worker.work(burst=True, logging_level="WARNING")
    job = Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer)
    assert job.get_status() == "finished" and job.ended_at is not None
    assert job.last_heartbeat is not None and abs((job.last_heartbeat - job.ended_at).total_seconds()) < 1
    assert JobStore(fake_redis, unit_config).read(job_id, "status") == {"status": "finished"}


def test_a_job_costs_two_round_trips_and_leaves_rq_state_as_rq_does(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from rq.job import Job
    from rq.registry import FinishedJobRegistry, StartedJobRegistry

    from collector.run import runner
    from collector.store.events import JobEventsHandler

    monkeypatch.setattr(runner, "_runtime", None)
    platforms_logger = logging.getLogger("platforms")
    monkeypatch.setattr(platforms_logger, "handlers", [h for h in platforms_logger.handlers
                                                       if not isinstance(h, JobEventsHandler)])
    submitter = Submitter(connection=fake_redis, config=unit_config, registry=registry)
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w3")
    install(runtime)
    sent: list[int] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, *args: object, **kwargs: object) -> None:
        sent.append(1)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    def drain(jobs: int, name: str) -> tuple[list[str], int]:
        ids = [submitter.submit({"platform_id": "demo", "settings": {"rows": 2}})["job_id"] for _ in range(jobs)]
        worker = CollectorWorker(["collector"], connection=fake_redis, name=name, serializer=JSONSerializer,
                                 queue_class=claiming_queue(name))  # as the pool makes its children
        worker.runtime = runtime
        before = len(sent)
        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
        with caplog.at_level(logging.INFO):
            assert worker.work(burst=True, logging_level="INFO")
        monkeypatch.setattr(AbstractConnection, "send_packed_command", original)
        return ids, len(sent) - before

    drain(1, "w3")  # the first worker of the process opens its connections: not counted
    _, one = drain(1, "w4")
    ids, four = drain(4, "w5")
    # RQ's start with collector's (one script); collector's end (fenced), RQ's end and the take of the next job with
    # its job hash (one script)
    assert (four - one) / 3 == 2

    for job_id in ids:
        job = Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer)
        assert job.get_status() == "finished" and job.return_value() is None, "no RQ result: the record has it"
        assert not fake_redis.exists(f"rq:results:{job_id}")
        assert JobStore(fake_redis, unit_config).read(job_id, "result") == {"result": {"rows": 2}}
        assert job.worker_name == "w5" and job.started_at is not None and job.ended_at is not None
        # the end writes the fields it changes, not the whole job: what RQ saved at the enqueue is all there
        assert job.func_name == RUN_FUNCTION and job.origin == "collector" and job.enqueued_at is not None
        assert {k.decode() for k in fake_redis.hkeys(job.key)} >= set(job.to_dict()) | {"ended_at", "worker_name"}
        assert job.ended_at >= job.started_at and job.last_heartbeat == job.ended_at
        assert fake_redis.ttl(job.key) > 0
        assert JobStore(fake_redis, unit_config).read(job_id, "status") == {"status": "finished"}
        assert all(fake_redis.ttl(k) > 0 for k in fake_redis.keys(f"*{job_id}:dataset:*"))
        assert len(fake_redis.keys(f"*{job_id}:dataset:*")) == 2
    assert set(ids) <= set(FinishedJobRegistry("collector", connection=fake_redis).get_job_ids())
    assert StartedJobRegistry("collector", connection=fake_redis).get_job_ids() == []
    worker_hash = fake_redis.hgetall("rq:worker:w5")
    assert b"current_job" not in worker_hash and worker_hash[b"successful_job_count"] == b"4"
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Job OK" in m or "result is kept" in m]  # RQ's per-job lines
    started = [r for r in caplog.records if getattr(r, "event", None) == "started"]
    assert {r.job_id for r in started} >= set(ids)  # type: ignore[attr-defined]
    assert any("started with PID" in m for m in messages)  # RQ's start-up line stays


def test_a_suspended_burst_worker_runs_nothing(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rq.suspension import suspend

    from collector.run import runner

    monkeypatch.setattr(runner, "_runtime", None)
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=registry).submit(
        {"platform_id": "demo", "settings": {"rows": 1}})["job_id"]
    install(Runtime(unit_config, fake_redis, registry, worker_name="w5"))
    suspend(fake_redis)
    worker = CollectorWorker(["collector"], connection=fake_redis, name="w5", serializer=JSONSerializer)
    worker.work(burst=True, logging_level="WARNING")
    assert JobStore(fake_redis, unit_config).read(job_id, "status") == {"status": "queued"}


def test_jobs_run_under_the_function_names_rq_stores_though_no_module_bears_them(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import logging

    from rq.job import Job

    from collector.run import runner
    from collector.store.events import JobEventsHandler
    from collector.store.rq import CHECK_FUNCTION, RQ

    monkeypatch.setattr(runner, "_runtime", None)
    platforms_logger = logging.getLogger("platforms")
    monkeypatch.setattr(platforms_logger, "handlers", [h for h in platforms_logger.handlers
                                                       if not isinstance(h, JobEventsHandler)])
    # Jobs queued before the modules moved name these, and so do the jobs queued now.
    assert importlib.util.find_spec("collector.runner") is None and importlib.util.find_spec("collector.checks") is None
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=registry).submit(
        {"platform_id": "demo", "settings": {"rows": 1}})["job_id"]
    with fake_redis.pipeline() as pipe:
        RQ(fake_redis, unit_config).enqueue_check(pipe, "check-gone", linger_s=30, description="a check")
        pipe.execute()
    assert Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer).func_name == "collector.runner.run_job"
    assert CHECK_FUNCTION == "collector.checks.run_check"
    install(Runtime(unit_config, fake_redis, registry, worker_name="w6"))
    worker = CollectorWorker(["collector"], connection=fake_redis, name="w6", serializer=JSONSerializer)
    assert worker.work(burst=True, logging_level="WARNING")
    assert JobStore(fake_redis, unit_config).read(job_id, "status") == {"status": "finished"}
    # The check ran (a refused one would be in the failed registry) and, done, left nothing in RQ.
    assert fake_redis.llen("rq:queue:collector") == 0 and not fake_redis.exists("rq:job:check-gone")
    assert fake_redis.zcard("rq:failed:collector") == 0 and not fake_redis.exists("rq:results:check-gone")
