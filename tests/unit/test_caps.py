"""Concurrency caps on fakeredis (the Lua runs in lupa): specs and configuration, slots taken and parked in order,
released however a job ends, repaired by maintenance, and shown by the API."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector.app import create_app
from collector.config import Config, parse_caps
from collector.errors import ConfigError
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.records import JobStore, Keys
from collector.submit.submitter import Submitter
from collector.workflows.cancel import cancel
from collector.workflows.caps import Caps
from collector.workflows.recovery import recover
from collector.workflows.waiting import suspend
from tests.unit.test_metrics import samples

KEYS = Keys("collector")


@pytest.fixture
def capped(unit_config: Config) -> Config:
    return dataclasses.replace(unit_config, concurrency="demo=1, demo:acme=2")


def submit(redis: fakeredis.FakeRedis, config: Config, registry: Registry, **spec: object) -> str:
    body = {"platform_id": "demo", "settings": {"rows": 1}, **spec}
    return Submitter(connection=redis, config=config, registry=registry).submit(body)["job_id"]


def status(redis: fakeredis.FakeRedis, job_id: str) -> tuple[str | None, str | None]:
    values = redis.hmget(KEYS.job(job_id), ["status", "waiting_for"])
    return tuple(v.decode() if v else None for v in values)  # type: ignore[return-value]


def holders(redis: fakeredis.FakeRedis, cap: str) -> list[str]:
    return [raw.decode() for raw in redis.zrange(KEYS.cap_slots(cap), 0, -1)]


def parked(redis: fakeredis.FakeRedis, cap: str) -> list[str]:
    return [raw.decode() for raw in redis.lrange(KEYS.cap_parked(cap), 0, -1)]


def queue(redis: fakeredis.FakeRedis) -> list[str]:
    return [raw.decode() for raw in redis.lrange("rq:queue:collector", 0, -1)]


def test_operator_caps_parse_and_a_wrong_entry_is_named() -> None:
    assert parse_caps(" demo=2 , demo:acme-eu=1,") == {"demo": 2, "demo:acme-eu": 1}
    assert parse_caps("") == {}
    for wrong in ("demo", "demo=0", "demo=x", "demo:=1", "de mo=1", "demo:a,b=1"):
        with pytest.raises(ConfigError) as caught:
            Config(concurrency=wrong)
        assert "COLLECTOR_CONCURRENCY entry" in caught.value.message and "platform:key=N" in caught.value.message


def test_a_spec_names_its_key_and_a_bad_key_changes_nothing(
    fake_redis: fakeredis.FakeRedis, capped: Config, registry: Registry
) -> None:
    client = create_app(capped, connection=fake_redis, registry=registry, dashboard=False).test_client()
    for bad in ("", "a b", "x" * 65, 7, ["acme"]):
        answer = client.post("/execution/run", json={"platform_id": "demo", "concurrency_key": bad})
        assert answer.status_code == 422, bad
        assert "concurrency_key" in answer.get_json()["details"]
    assert fake_redis.keys("collector:job:*") == []
    job_id = submit(fake_redis, capped, registry, concurrency_key="acme")
    view = client.get(f"/execution/get?job_id={job_id}").get_json()
    assert view["concurrency_key"] == "acme" and view["concurrency"] == "demo:acme"
    assert b'"cap":"demo:acme"' in fake_redis.hget(f"rq:job:{job_id}", "meta").replace(b" ", b"")
    uncapped = dataclasses.replace(capped, concurrency="")
    plain = submit(fake_redis, uncapped, registry)
    assert "concurrency" not in JobStore(fake_redis, uncapped).read(plain)


def test_platforms_show_their_caps(client: FlaskClient, fake_redis: fakeredis.FakeRedis, capped: Config,
                                   registry: Registry) -> None:
    shown = {p["id"]: p for p in client.get("/platforms/get").get_json()["platforms"]}
    assert shown["demo"]["concurrency"] is None and shown["demo"]["concurrency_keys"] == {}
    app = create_app(capped, connection=fake_redis, registry=registry, dashboard=False)
    shown = {p["id"]: p for p in app.test_client().get("/platforms/get").get_json()["platforms"]}
    assert shown["demo"]["concurrency"] == 1 and shown["demo"]["concurrency_keys"] == {"acme": 2}


def test_over_the_cap_a_job_parks_and_a_freed_slot_wakes_the_oldest_first(
    fake_redis: fakeredis.FakeRedis, capped: Config, registry: Registry
) -> None:
    caps = Caps(connection=fake_redis, config=capped, registry=registry)
    first, second, third = (submit(fake_redis, capped, registry) for _ in range(3))
    assert caps.admit(first, cap="demo", timeout_s=60)
    assert not caps.admit(second, cap="demo", timeout_s=60)
    assert not caps.admit(third, cap="demo", timeout_s=60)
    assert status(fake_redis, second) == ("deferred", "concurrency")
    assert fake_redis.hget(f"rq:job:{second}", "status") == b"deferred"
    assert parked(fake_redis, "demo") == [second, third] and holders(fake_redis, "demo") == [first]
    events = JobStore(fake_redis, capped).events(second)
    assert events[-1]["type"] == "deferred" and events[-1]["waiting_for"] == "concurrency"

    # The first finishes: its end gives the slot back, and the oldest parked job takes it, first in the queue.
    fake_redis.lrem("rq:queue:collector", 0, first)
    execute(first, Runtime(capped, fake_redis, registry, worker_name="w1"))
    assert status(fake_redis, first)[0] == "finished"
    assert holders(fake_redis, "demo") == [second] and parked(fake_redis, "demo") == [third]
    assert status(fake_redis, second) == ("queued", None) and queue(fake_redis)[0] == second
    # The slot kept for it is its own when a child takes it; a new job parks behind the third.
    assert caps.admit(second, cap="demo", timeout_s=60)
    fourth = submit(fake_redis, capped, registry)
    assert not caps.admit(fourth, cap="demo", timeout_s=60)
    assert parked(fake_redis, "demo") == [third, fourth]


def test_each_key_has_its_own_cap(fake_redis: fakeredis.FakeRedis, capped: Config, registry: Registry) -> None:
    caps = Caps(connection=fake_redis, config=capped, registry=registry)
    acme = [submit(fake_redis, capped, registry, concurrency_key="acme") for _ in range(3)]
    other = [submit(fake_redis, capped, registry, concurrency_key="other") for _ in range(2)]
    assert [caps.admit(j, cap="demo:acme", timeout_s=60) for j in acme] == [True, True, False]
    assert [caps.admit(j, cap="demo:other", timeout_s=60) for j in other] == [True, False]


def test_a_cancel_a_wait_and_a_dead_worker_give_the_slot_back(
    fake_redis: fakeredis.FakeRedis, capped: Config, registry: Registry
) -> None:
    caps = Caps(connection=fake_redis, config=capped, registry=registry)
    running, waits, parked_one = (submit(fake_redis, capped, registry) for _ in range(3))
    assert caps.admit(running, cap="demo", timeout_s=60)
    assert not caps.admit(waits, cap="demo", timeout_s=60) and not caps.admit(parked_one, cap="demo", timeout_s=60)

    # A parked job canceled leaves the parked list.
    assert cancel(fake_redis, capped, parked_one, by="ops")["status"] == "canceled"
    assert parked(fake_redis, "demo") == [waits] and status(fake_redis, parked_one)[0] == "canceled"

    # The running job's worker dies: the slot is given back as the job is settled, and maintenance wakes `waits`.
    fake_redis.hset(KEYS.job(running), mapping={"status": "started", "worker": "w1", "attempt": 1})
    assert recover(fake_redis, capped, running, kind="died", cause="killed by signal 9", worker_name="w1")
    assert holders(fake_redis, "demo") == []
    caps.tend()
    assert holders(fake_redis, "demo") == [waits] and status(fake_redis, waits) == ("queued", None)

    # It runs and waits for input: a waiting job holds no slot.
    fake_redis.hset(KEYS.job(waits), "status", "started")
    wait = {"kind": "input", "name": "code", "prompt": "the code", "timeout_s": 60}
    assert suspend(fake_redis, JobStore(fake_redis, capped), waits, wait, {}) == "waiting"
    assert holders(fake_redis, "demo") == []


def test_maintenance_repairs_slots_of_jobs_that_no_longer_run(
    fake_redis: fakeredis.FakeRedis, capped: Config, registry: Registry
) -> None:
    caps = Caps(connection=fake_redis, config=capped, registry=registry)
    lost, expired, waiting = (submit(fake_redis, capped, registry) for _ in range(3))
    assert caps.admit(lost, cap="demo", timeout_s=60)
    assert not caps.admit(expired, cap="demo", timeout_s=60) and not caps.admit(waiting, cap="demo", timeout_s=60)
    fake_redis.hset(KEYS.job(lost), "status", "failed")  # ended without its end giving the slot back (a crash)
    fake_redis.delete(KEYS.job(expired))  # a parked job's record gone: dropped as its turn comes
    caps.tend()
    assert holders(fake_redis, "demo") == [waiting] and status(fake_redis, waiting)[0] == "queued"
    assert parked(fake_redis, "demo") == []
    # Woken but never queued again (its waker died after taking the slot for it): queued by the next tick.
    fake_redis.hset(KEYS.job(waiting), mapping={"status": "deferred", "waiting_for": "concurrency"})
    fake_redis.lrem("rq:queue:collector", 0, waiting)
    caps.tend()
    assert status(fake_redis, waiting)[0] == "queued" and queue(fake_redis)[0] == waiting
    fake_redis.delete(KEYS.job(waiting))
    caps.tend()
    assert holders(fake_redis, "demo") == [] and not fake_redis.sismember(KEYS.caps(), "demo")


def test_a_job_with_no_cap_left_is_admitted(fake_redis: fakeredis.FakeRedis, capped: Config,
                                            registry: Registry) -> None:
    job_id = submit(fake_redis, capped, registry)
    lifted = Caps(connection=fake_redis, config=dataclasses.replace(capped, concurrency=""), registry=registry)
    assert lifted.admit(job_id, cap="demo", timeout_s=60) and holders(fake_redis, "demo") == []


@pytest.mark.parametrize(("n", "value", "ok"), [(0, "2", True), (1, "None", True), (2, "0", False),
                                                 (3, "'2'", False), (4, "True", False)])
def test_a_platform_cap_is_a_whole_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, value: str,
                                          ok: bool) -> None:
    name = f"cappedplatforms{n}"  # a module is imported once per name
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "capped.py").write_text(textwrap.dedent(f'''
        from collector.platform import Platform

        class Capped(Platform):
            """Runs two at a time."""

            CONCURRENCY = {value}

            def _run(self, ctx):
                return {{}}
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.discover(name)
    if ok:
        assert registry.platforms["capped"].concurrency == eval(value)
    else:
        assert "CONCURRENCY" in registry.broken["capped"] and "whole number" in registry.broken["capped"]


def test_metrics_show_each_caps_slots_held_and_jobs_parked(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, capped: Config, registry: Registry
) -> None:
    caps = Caps(connection=fake_redis, config=capped, registry=registry)
    jobs = [submit(fake_redis, capped, registry) for _ in range(3)]
    assert [caps.admit(job_id, cap="demo", timeout_s=60) for job_id in jobs] == [True, False, False]
    assert caps.admit(submit(fake_redis, capped, registry, concurrency_key="acme"), cap="demo:acme", timeout_s=60)
    got = samples(client)
    assert got[("collector_concurrency_slots_held", (("cap", "demo"),))] == 1
    assert got[("collector_jobs_parked", (("cap", "demo"),))] == 2
    assert got[("collector_concurrency_slots_held", (("cap", "demo:acme"),))] == 1
    assert got[("collector_jobs_parked", (("cap", "demo:acme"),))] == 0


def test_a_job_retried_after_its_rq_hash_is_gone_keeps_its_cap(
    fake_redis: fakeredis.FakeRedis, capped: Config, registry: Registry
) -> None:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from collector.errors import JobFailedError
    from collector.workflows.retry import retry

    job_id = submit(fake_redis, capped, registry, priority="high", settings={"rows": 2, "fail_at": 1})
    assert Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer).meta["cap"] == "demo"
    fake_redis.delete("rq:queue:collector:high")
    with pytest.raises(JobFailedError):
        execute(job_id, Runtime(capped, fake_redis, registry, worker_name="w1"))
    fake_redis.delete(f"rq:job:{job_id}")  # expired before anyone retried it
    retry(fake_redis, capped, job_id, by="ops")
    again = Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer)
    assert again.meta == {"priority": "high", "cap": "demo"}
    assert fake_redis.lrange("rq:queue:collector:high", 0, -1) == [job_id.encode()]
