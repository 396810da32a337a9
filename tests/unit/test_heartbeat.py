"""The pool's RQ worker: heartbeats in one round trip, repeats within a second and repeated states skipped."""

from __future__ import annotations

import fakeredis
import pytest
from redis.connection import AbstractConnection
from rq.serializers import JSONSerializer

from collector import heartbeat
from collector.config import Config
from collector.jobs import Submitter
from collector.registry import Registry
from collector.runner import Runtime, install
from collector.state import JobStore
from collector.worker import CollectorWorker


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

    from collector import runner
    from collector.logs import JobEventsHandler

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
