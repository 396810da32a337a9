"""A pool child's next job taken with the last one's end: in its claims, run next, given back or recovered."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from collector.config import Config
from collector.pool.children import CollectorWorker
from collector.run import runner
from collector.run.runner import Runtime, install
from collector.specs.registry import Registry
from collector.store import lanes
from collector.store.claiming_queue import claiming_queue
from collector.store.records import JobStore, Lease
from collector.store.rq import claims_key
from collector.submit.submitter import Submitter
from collector.workflows.recovery import recover_claims

QUEUE = "rq:queue:collector"


@pytest.fixture
def worker(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry,
           monkeypatch: pytest.MonkeyPatch) -> CollectorWorker:
    monkeypatch.setattr(runner, "_runtime", None)
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w")
    install(runtime)
    made = CollectorWorker(["collector"], connection=fake_redis, name="w", serializer=JSONSerializer,
                           queue_class=claiming_queue("w"))
    made.runtime = runtime
    return made


def submit(connection: fakeredis.FakeRedis, config: Config, registry: Registry, priority: str = "normal") -> str:
    body = {"platform_id": "demo", "settings": {"rows": 1}, "priority": priority}
    return Submitter(connection=connection, config=config, registry=registry).submit(body)["job_id"]


def status(connection: fakeredis.FakeRedis, config: Config, job_id: str) -> str:
    return JobStore(connection, config).read(job_id, "status")["status"]


def test_the_next_job_is_taken_with_the_end_of_the_last_and_run_next(
    worker: CollectorWorker, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    first, second, third = (submit(fake_redis, unit_config, registry) for _ in range(3))
    taken: list[str] = []
    original = worker.queue_class.lmove

    def counting(*args: object, **kwargs: object) -> object:
        found = original(*args, **kwargs)  # type: ignore[arg-type]
        taken.append(found[1].decode() if found else "")
        return found

    worker.queue_class.lmove = counting  # type: ignore[method-assign]
    assert worker.work(burst=True)
    assert [status(fake_redis, unit_config, j) for j in (first, second, third)] == ["finished"] * 3
    assert taken == [first, second, third, ""]
    assert fake_redis.llen(claims_key(QUEUE, "w")) == 0 and fake_redis.llen(QUEUE) == 0


def test_a_worker_that_stops_gives_back_the_job_it_had_taken_next(
    worker: CollectorWorker, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    first, second, third = (submit(fake_redis, unit_config, registry, "low") for _ in range(3))
    assert worker.work(burst=True, max_jobs=1)  # it took `second` with the end of `first`, then stopped
    assert status(fake_redis, unit_config, second) == "queued"
    assert fake_redis.lrange(f"{QUEUE}:low", 0, -1) == [second.encode(), third.encode()]  # back at the head
    assert fake_redis.llen(claims_key(QUEUE, "w")) == 0
    assert status(fake_redis, unit_config, first) == "finished"


def test_a_worker_asked_to_stop_takes_nothing_with_the_end_of_its_job(
    worker: CollectorWorker, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job = Job.fetch(submit(fake_redis, unit_config, registry), connection=fake_redis, serializer=JSONSerializer)
    worker._stop_requested = True
    assert worker.send_end(job, []) is None
    assert fake_redis.llen(QUEUE) == 1 and fake_redis.llen(claims_key(QUEUE, "w")) == 0


def test_a_job_taken_next_by_a_child_that_dies_is_queued_again(
    worker: CollectorWorker, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, unit_config, registry)
    before = Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer)  # stands for the job that ended
    assert worker.send_end(before, [(("EXISTS", "rq:suspended"), {})]) == [0]  # the end of the job before, and the take
    assert fake_redis.lrange(claims_key(QUEUE, "w"), 0, -1) == [job_id.encode()]
    assert fake_redis.llen(QUEUE) == 0
    recover_claims(fake_redis, unit_config, "w", cause="killed")  # the child died before running it
    assert fake_redis.lrange(QUEUE, 0, -1) == [job_id.encode()]
    assert status(fake_redis, unit_config, job_id) == "queued"


def test_a_start_lost_in_flight_is_sent_again_and_the_job_runs(
    worker: CollectorWorker, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = (submit(fake_redis, unit_config, registry) for _ in range(2))
    original, lost = runner._write_start, []

    def lost_once(*args: object, **kwargs: object) -> object:
        if not lost:  # the primary died with the script in flight
            lost.append(args[1])
            raise redis.ConnectionError("Connection closed by server.")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "_write_start", lost_once)
    assert worker.work(burst=True)
    assert lost == [first]
    assert [status(fake_redis, unit_config, j) for j in (first, second)] == ["finished"] * 2
    assert [Job.fetch(j, connection=fake_redis, serializer=JSONSerializer).get_status() for j in (first, second)] \
        == ["finished"] * 2  # not failed on RQ's side for a write that was only late
    assert fake_redis.llen(claims_key(QUEUE, "w")) == 0


def test_an_end_lost_in_flight_is_written_alone_and_what_it_took_goes_back(
    worker: CollectorWorker, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second, third = (submit(fake_redis, unit_config, registry) for _ in range(3))
    original, lost = lanes.Taker.take_after, []

    def lost_once(taker: lanes.Taker, *args: Any) -> Any:
        answer = original(taker, *args)
        if not lost:  # the script ran and took the next job; its answer was lost
            lost.append(answer)
            raise redis.ConnectionError("Connection closed by server.")
        return answer

    monkeypatch.setattr(lanes.Taker, "take_after", lost_once)
    assert worker.work(burst=True)
    assert len(lost) == 1
    assert [status(fake_redis, unit_config, j) for j in (first, second, third)] == ["finished"] * 3
    assert [Job.fetch(j, connection=fake_redis, serializer=JSONSerializer).get_status()
            for j in (first, second, third)] == ["finished"] * 3
    assert fake_redis.llen(claims_key(QUEUE, "w")) == 0 and fake_redis.llen(QUEUE) == 0


def test_a_finished_run_that_lost_its_lease_writes_nothing_and_takes_nothing(
    worker: CollectorWorker, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = (submit(fake_redis, unit_config, registry) for _ in range(2))
    original = Lease.fenced

    def taken_meanwhile(lease: Lease, build: Any) -> list[Any]:
        made = original(lease, build)
        if lease.job_id == first:  # recovered while it ran: another attempt holds it now
            fake_redis.hset(JobStore(fake_redis, unit_config).keys.job(first), "lease", "another")
        return made

    monkeypatch.setattr(Lease, "fenced", taken_meanwhile)
    assert worker.work(burst=True)
    record = JobStore(fake_redis, unit_config).read(first, "status", "lease")
    assert record == {"status": "started", "lease": "another"}  # the other attempt's, untouched
    assert Job.fetch(first, connection=fake_redis, serializer=JSONSerializer).get_status() != "finished"
    assert "lost its lease (taken) before its end was written" in caplog.text
    assert status(fake_redis, unit_config, second) == "finished"  # taken afterwards, as usual
    assert fake_redis.llen(claims_key(QUEUE, "w")) == 0


def test_a_worker_asked_to_stop_as_its_job_ends_writes_that_end_and_takes_nothing(
    worker: CollectorWorker, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = (submit(fake_redis, unit_config, registry) for _ in range(2))
    original = Lease.fenced

    def stop_asked(lease: Lease, build: Any) -> list[Any]:
        worker._stop_requested = True  # SIGTERM while the job ran
        return original(lease, build)

    monkeypatch.setattr(Lease, "fenced", stop_asked)
    worker.work(burst=True)
    assert status(fake_redis, unit_config, first) == "finished"
    assert Job.fetch(first, connection=fake_redis, serializer=JSONSerializer).get_status() == "finished"
    assert status(fake_redis, unit_config, second) == "queued"
    assert fake_redis.lrange(QUEUE, 0, -1) == [second.encode()] and fake_redis.llen(claims_key(QUEUE, "w")) == 0
