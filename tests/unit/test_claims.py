"""A pool child's claims: the queue class that takes jobs into the child's own list, on fakeredis."""

from __future__ import annotations

import datetime
from typing import Any

import fakeredis
import pytest
import redis
from rq.executions import Execution

from collector.config import Config
from collector.specs.registry import Registry
from collector.store import scripts
from collector.store.claiming_queue import claiming_queue
from collector.store.records import JobStore
from collector.store.rq import RQ, JSONSerializer, claims_key
from collector.submit.submitter import Submitter
from collector.workflows.recovery import recover

QUEUE = "rq:queue:collector"


def enqueue(connection: fakeredis.FakeRedis, config: Config, job_id: str) -> None:
    with connection.pipeline() as pipe:
        pipe.multi()
        RQ(connection, config).enqueue(pipe, job_id, timeout=60)
        pipe.execute()


def dequeue(connection: fakeredis.FakeRedis, queue_class: type) -> str | None:
    found = queue_class.dequeue_any([queue_class("collector", connection=connection, serializer=JSONSerializer)],
                                    None, connection=connection, serializer=JSONSerializer)
    return None if found is None else found[0].id


def test_a_job_taken_is_in_the_childs_claims_and_nowhere_else(fake_redis: fakeredis.FakeRedis,
                                                              unit_config: Config) -> None:
    enqueue(fake_redis, unit_config, "j1")
    queue_class = claiming_queue("host.1.0.1")
    assert dequeue(fake_redis, queue_class) == "j1"
    assert fake_redis.lrange(claims_key(QUEUE, "host.1.0.1"), 0, -1) == [b"j1"]
    assert fake_redis.llen(QUEUE) == 0 and fake_redis.llen(f"{QUEUE}:intermediate") == 0
    assert queue_class("collector", connection=fake_redis).intermediate_queue_key == claims_key(QUEUE, "host.1.0.1")
    assert RQ(fake_redis, unit_config).claimed("host.1.0.1") == ["j1"]
    assert dequeue(fake_redis, claiming_queue("host.1.0.2")) is None, "another child finds nothing"


def test_an_id_without_its_job_hash_is_skipped_and_leaves_the_claims(fake_redis: fakeredis.FakeRedis,
                                                                     unit_config: Config) -> None:
    fake_redis.rpush(QUEUE, "gone")
    enqueue(fake_redis, unit_config, "j2")
    assert dequeue(fake_redis, claiming_queue("w")) == "j2"
    assert fake_redis.lrange(claims_key(QUEUE, "w"), 0, -1) == [b"j2"]


def test_a_move_whose_answer_was_lost_gives_its_job_back_before_the_next(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(fake_redis, unit_config, "j3")
    enqueue(fake_redis, unit_config, "j4")
    queue_class = claiming_queue("w")
    real_call = scripts.call  # the take is one script: LMOVE from the lane it chose

    def lost(*args: object, **kwargs: object) -> object:
        real_call(*args, **kwargs)  # type: ignore[arg-type]  # Redis moved the job; the answer never came back
        raise redis.ConnectionError("connection reset")

    monkeypatch.setattr(scripts, "call", lost)
    with pytest.raises(redis.ConnectionError):
        dequeue(fake_redis, queue_class)
    monkeypatch.setattr(scripts, "call", real_call)
    assert fake_redis.lrange(claims_key(QUEUE, "w"), 0, -1) == [b"j3"]
    assert dequeue(fake_redis, queue_class) == "j3", "given back to the head of the queue, then taken again"
    assert fake_redis.lrange(claims_key(QUEUE, "w"), 0, -1) == [b"j3"]
    assert fake_redis.lrange(QUEUE, 0, -1) == [b"j4"]


def test_releasing_a_job_clears_every_list_and_registry_rq_keeps_it_in(fake_redis: fakeredis.FakeRedis,
                                                                       unit_config: Config) -> None:
    rq = RQ(fake_redis, unit_config)
    fake_redis.rpush(f"{QUEUE}:intermediate", "j5", "other")
    fake_redis.set(f"{QUEUE}:intermediate:first_seen:j5", 1)
    fake_redis.rpush(claims_key(QUEUE, "w"), "j5")
    fake_redis.zadd("rq:failed:collector", {"j5": 1, "other": 1})
    with fake_redis.pipeline() as pipe:
        rq.release(pipe, "j5", worker_name="w")
        pipe.execute()
    assert fake_redis.lrange(f"{QUEUE}:intermediate", 0, -1) == [b"other"]
    assert not fake_redis.exists(f"{QUEUE}:intermediate:first_seen:j5", claims_key(QUEUE, "w"))
    assert fake_redis.zrange("rq:failed:collector", 0, -1) == [b"other"]


def started_in_rq(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry) -> tuple[str, Any]:
    """A submitted job as a worker's start leaves it in RQ (worker `w`): its id and RQ's job."""
    job_id = Submitter(connection=fake_redis, config=config, registry=registry).submit(
        {"platform_id": "demo", "settings": {"rows": 1}})["job_id"]
    job = RQ(fake_redis, config).fetch(job_id)
    assert job is not None
    with fake_redis.pipeline() as pipe:
        Execution.create(job, 60, pipeline=pipe, worker_name="w")
        pipe.hset(job.key, "status", "started")
        pipe.persist(job.key)
        pipe.lrem(QUEUE, 0, job_id)
        pipe.execute()
    return job_id, job


@pytest.mark.parametrize("found_by", ["its supervisor", "the sweep of its dead pool"])
def test_a_worker_killed_right_after_its_final_write_leaves_rq_nothing_to_flag_failed(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, found_by: str
) -> None:
    job_id, job = started_in_rq(fake_redis, unit_config, registry)
    assert fake_redis.zcard("rq:wip:collector") == 1
    fake_redis.hset(f"collector:job:{job_id}", mapping={"status": "finished", "pool": "p1"})  # then SIGKILL
    by = {"worker_name": "w"} if found_by == "its supervisor" else {"pool": "p1"}
    assert recover(fake_redis, unit_config, job_id, kind="died", cause="killed", **by) is None
    assert fake_redis.zcard("rq:wip:collector") == 0, "no execution left for RQ's cleanup"
    assert fake_redis.hget(job.key, "status") == b"finished"
    assert 0 < fake_redis.ttl(job.key) <= unit_config.record_ttl_s
    assert JobStore(fake_redis, unit_config).read(job_id, "status")["status"] == "finished"


@pytest.mark.parametrize("status", ["scheduled", "waiting"])
@pytest.mark.parametrize("found_by", ["its supervisor", "the sweep of its dead pool"])
def test_a_worker_killed_right_after_a_retry_or_wait_is_written_leaves_rq_no_run(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, status: str, found_by: str
) -> None:
    """The record waits for its retry (or an input); the worker died before RQ's side of its run was cleaned up:
    the run's execution must not stay in RQ's started registry (counted running, flagged failed when it expires)."""
    job_id, _ = started_in_rq(fake_redis, unit_config, registry)
    fake_redis.rpush(claims_key(QUEUE, "w"), job_id)
    fake_redis.hset(f"collector:job:{job_id}", mapping={"status": status, "pool": "p1"})  # then SIGKILL
    by = {"worker_name": "w"} if found_by == "its supervisor" else {"pool": "p1"}
    assert recover(fake_redis, unit_config, job_id, kind="died", cause="killed", **by) is None
    assert fake_redis.zcard("rq:wip:collector") == 0, "no execution left for RQ's cleanup"
    assert fake_redis.llen(claims_key(QUEUE, "w")) == (0 if "worker_name" in by else 1)
    assert JobStore(fake_redis, unit_config).read(job_id, "status")["status"] == status


@pytest.mark.parametrize("stamp", ["2026-12-03T09:51:39.128123Z", "2026-01-02T03:04:05.000000Z", "2026-01-02T03:04:05Z",
                                   "1999-12-31T23:59:59.999999Z"])
def test_rq_timestamps_read_as_rqs_own_parser_reads_them(stamp: str) -> None:
    from rq import utils as rq_utils

    import collector.store.rq as adapter  # installs the faster parser

    assert rq_utils.utcparse is not None and adapter is not None
    expected = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ" if "." in stamp else "%Y-%m-%dT%H:%M:%SZ")
    assert rq_utils.str_to_date(stamp.encode()) == expected.replace(tzinfo=datetime.UTC)
    with pytest.raises(ValueError):
        rq_utils.str_to_date("not a time")
