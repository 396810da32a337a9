"""Priority lanes on fakeredis: where a job waits, the order a pool child takes jobs in, aging, and every requeue."""

from __future__ import annotations

import datetime as dt

import fakeredis
import pytest
from flask.testing import FlaskClient
from rq.job import Job
from rq.serializers import JSONSerializer

from collector.config import Config
from collector.errors import ConfigError
from collector.specs.registry import Registry
from collector.store.claiming_queue import claiming_queue
from collector.store.lanes import Taker
from collector.store.records import JobStore
from collector.store.rq import RQ, claims_key, lane_key, wake_key
from collector.store.rq_dashboard import DashboardQueue
from collector.submit.submitter import Submitter
from collector.workflows.cancel import cancel
from collector.workflows.children import JobLinks
from collector.workflows.recovery import enqueue_due, recover_claims
from collector.workflows.retry import retry
from collector.workflows.schedules import Schedules
from collector.workflows.waiting import suspend

QUEUE = "rq:queue:collector"
LANES = {"high": f"{QUEUE}:high", "normal": QUEUE, "low": f"{QUEUE}:low"}


def submit(connection: fakeredis.FakeRedis, config: Config, registry: Registry, priority: str | None = None) -> str:
    body: dict = {"platform_id": "demo", "settings": {"rows": 1}}
    if priority is not None:
        body["priority"] = priority
    return Submitter(connection=connection, config=config, registry=registry).submit(body)["job_id"]


def take(connection: fakeredis.FakeRedis, worker: str = "w", *, age_s: float = 0.0,
         queue_class: type | None = None) -> str | None:
    queue_class = queue_class or claiming_queue(worker, age_s=age_s)
    found = queue_class.dequeue_any([queue_class("collector", connection=connection, serializer=JSONSerializer)],
                                    None, connection=connection, serializer=JSONSerializer)
    return None if found is None else found[0].id


def lanes_of(connection: fakeredis.FakeRedis) -> dict[str, list[str]]:
    return {name: [i.decode() for i in connection.lrange(key, 0, -1)] for name, key in LANES.items()}


def queued_ago(connection: fakeredis.FakeRedis, job_id: str, seconds: float) -> None:
    """As if RQ had queued `job_id` `seconds` ago (its hash's `enqueued_at`)."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    connection.hset(f"rq:job:{job_id}", "enqueued_at", at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def first_taken(connection: fakeredis.FakeRedis, ages: dict[str, float], *, age_s: float) -> str:
    """The lane a child takes from first when each lane's only job was queued `ages[lane]` seconds ago."""
    connection.flushall()
    for lane, seconds in ages.items():
        connection.rpush(LANES[lane], lane)
        queued_ago(connection, lane, seconds)
    taker = Taker(list(LANES.values()), claims="claims", wake="wake", age_s=age_s, job_prefix="rq:job:")
    taken = taker.take_once(connection)
    assert taken is not None and connection.lrange("claims", 0, -1) == [taken[1]]
    return taken[1].decode()


def test_a_head_counts_one_lane_higher_per_age_step_it_has_waited(fake_redis: fakeredis.FakeRedis) -> None:
    assert first_taken(fake_redis, {"high": 1, "normal": 1, "low": 1}, age_s=60) == "high"
    assert first_taken(fake_redis, {"normal": 1, "low": 30}, age_s=60) == "normal", "not a step yet"
    # One step: low ranks with normal and, having waited longer, goes first.
    assert first_taken(fake_redis, {"normal": 30, "low": 90}, age_s=60) == "low"
    assert first_taken(fake_redis, {"normal": 100, "low": 90}, age_s=60) == "normal", "equal rank: oldest"
    # Two steps: it ranks with high, and goes before a high job that waited less.
    assert first_taken(fake_redis, {"high": 5, "normal": 70, "low": 130}, age_s=60) == "low"
    assert first_taken(fake_redis, {"high": 5, "normal": 70, "low": 130}, age_s=0) == "high", "0: strict"
    assert first_taken(fake_redis, {"high": 1, "low": 3600 * 24 * 400}, age_s=60) == "low", "never starved"


def test_lane_key_names_one_list_per_priority_and_normal_is_the_queue_itself() -> None:
    assert [lane_key(QUEUE, p) for p in ("high", "normal", "low")] == list(LANES.values())
    assert lane_key(QUEUE, None) == QUEUE and lane_key(QUEUE, "bogus") == QUEUE


@pytest.mark.parametrize("name", ["jobs:high", "jobs:low", "jobs:wake", "jobs:intermediate:x"])
def test_a_queue_name_that_reads_as_a_lane_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="QUEUE_NAME"):
        Config(queue_name=name)


def test_a_submit_waits_on_its_priority_lane_and_wakes_a_child(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    ids = {p: submit(fake_redis, unit_config, registry, p) for p in ("low", "high", "normal")}
    default = submit(fake_redis, unit_config, registry)
    assert lanes_of(fake_redis) == {"high": [ids["high"]], "normal": [ids["normal"], default], "low": [ids["low"]]}
    assert fake_redis.hget(f"collector:job:{ids['high']}", "priority") == b"high"
    assert fake_redis.hget(f"collector:job:{default}", "priority") == b"normal"
    assert fake_redis.llen(wake_key(QUEUE)) == 4
    assert {LANES["high"].encode(), LANES["low"].encode()} <= fake_redis.smembers("rq:queues"), "the dashboard's"
    job = Job.fetch(ids["high"], connection=fake_redis, serializer=JSONSerializer)
    assert job.origin == "collector" and job.meta == {"priority": "high"}, "one queue: RQ's registries are shared"
    counts = RQ(fake_redis, unit_config).counts("queued")
    assert counts == {"queued": 4}
    shown = {queue.name: queue.count for queue in DashboardQueue.all(connection=fake_redis)}
    assert shown == {"collector:high": 1, "collector": 2, "collector:low": 1}, "rq-dashboard lists every lane"


def test_a_sub_job_gets_its_parents_priority_unless_its_spec_names_one(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    parent = submit(fake_redis, unit_config, registry, "high")
    links = JobLinks(connection=fake_redis, config=unit_config, registry=registry)
    assert links.spawn(parent, f"{parent}-c0", {"platform_id": "demo", "settings": {"rows": 1}})
    assert links.spawn(parent, f"{parent}-c1", {"platform_id": "demo", "settings": {"rows": 1}, "priority": "low"})
    assert lanes_of(fake_redis) == {"high": [parent, f"{parent}-c0"], "normal": [], "low": [f"{parent}-c1"]}


def test_a_child_takes_high_then_normal_then_low_into_its_claims(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    low = submit(fake_redis, unit_config, registry, "low")
    normal = submit(fake_redis, unit_config, registry, "normal")
    high = submit(fake_redis, unit_config, registry, "high")
    assert take(fake_redis) == high
    assert fake_redis.lrange(claims_key(QUEUE, "w"), 0, -1) == [high.encode()]
    fake_redis.delete(claims_key(QUEUE, "w"))  # as RQ's start transaction does
    assert take(fake_redis) == normal
    fake_redis.delete(claims_key(QUEUE, "w"))
    assert take(fake_redis) == low
    assert take(fake_redis, "other") is None
    assert lanes_of(fake_redis) == {"high": [], "normal": [], "low": []}


def test_a_low_job_that_waited_long_is_taken_before_fresh_normal_ones(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    old = submit(fake_redis, unit_config, registry, "low")
    fresh = submit(fake_redis, unit_config, registry, "normal")
    assert take(fake_redis, age_s=60) == fresh, "not old enough yet"
    fake_redis.lpush(QUEUE, fresh)  # back at the head, as before
    fake_redis.lrem(claims_key(QUEUE, "w"), 0, fresh)
    fake_redis.hset(f"rq:job:{old}", "enqueued_at", "2000-01-01T00:00:00.000000Z")
    assert take(fake_redis, age_s=60) == old
    assert take(fake_redis, age_s=0) == fresh


def test_the_taken_job_comes_back_to_its_own_lane_however_it_is_requeued(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    high = submit(fake_redis, unit_config, registry, "high")
    low = submit(fake_redis, unit_config, registry, "low")
    assert take(fake_redis, "dead") == high
    recover_claims(fake_redis, unit_config, "dead", cause="killed")  # its child died before starting it
    assert lanes_of(fake_redis)["high"] == [high]
    cancel(fake_redis, unit_config, low, by="ops")
    assert lanes_of(fake_redis)["low"] == []
    assert retry(fake_redis, unit_config, low, by="ops")["status"] == "queued"  # by hand
    assert lanes_of(fake_redis)["low"] == [low]
    fake_redis.delete(f"rq:job:{low}")  # RQ's hash gone: recreated, still on its lane
    cancel(fake_redis, unit_config, low, by="ops")
    retry(fake_redis, unit_config, low, by="ops")
    assert lanes_of(fake_redis)["low"] == [low]
    assert Job.fetch(low, connection=fake_redis, serializer=JSONSerializer).meta == {"priority": "low"}


def test_a_resumed_job_goes_back_to_its_lane(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    low = submit(fake_redis, unit_config, registry, "low")
    assert take(fake_redis) == low  # a child took it; it asked for input and waits
    fake_redis.delete(claims_key(QUEUE, "w"))
    wait = {"kind": "input", "name": "signin", "prompt": "the code", "timeout_s": 60}
    assert suspend(fake_redis, JobStore(fake_redis, unit_config), low, wait, {}) == "waiting"
    token = client.get(f"/execution/get?job_id={low}").get_json()["waiting"]["resume_token"]
    answer = client.post(f"/execution/resume?job_id={low}", json={"token": token, "input": {"code": "1"}})
    assert answer.status_code == 202, answer.get_json()
    assert lanes_of(fake_redis) == {"high": [], "normal": [], "low": [low]}


def test_a_due_retry_goes_back_to_its_lane(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    high = submit(fake_redis, unit_config, registry, "high")
    rq = RQ(fake_redis, unit_config)
    with fake_redis.pipeline() as pipe:
        pipe.multi()
        pipe.lrem(LANES["high"], 0, high)
        pipe.hset(f"collector:job:{high}", "status", "scheduled")
        rq.schedule(pipe, high, at=0)
        pipe.execute()
    assert enqueue_due(fake_redis, unit_config) == 1
    assert lanes_of(fake_redis) == {"high": [high], "normal": [], "low": []}


def test_a_move_whose_answer_was_lost_gives_each_job_back_to_its_own_lane(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    high = submit(fake_redis, unit_config, registry, "high")
    low = submit(fake_redis, unit_config, registry, "low")
    for job_id, lane in ((high, "high"), (low, "low")):
        fake_redis.lrem(LANES[lane], 0, job_id)
        fake_redis.rpush(claims_key(QUEUE, "w"), job_id)
    queue_class = claiming_queue("w")
    queue_class._unsure = True
    assert take(fake_redis, queue_class=queue_class) == high, "both went back first, then high was taken"
    assert queue_class._unsure is False
    assert lanes_of(fake_redis) == {"high": [], "normal": [], "low": [low]}
    assert fake_redis.lrange(claims_key(QUEUE, "w"), 0, -1) == [high.encode()]


def test_a_schedule_carries_its_priority_to_every_job(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    schedules = Schedules(Submitter(connection=fake_redis, config=unit_config, registry=registry))
    made = schedules.create({"spec": {"platform_id": "demo", "settings": {"rows": 1}}, "interval_s": 60,
                             "priority": "low"}, now=0.0)
    assert schedules.get(made["id"])["spec"]["priority"] == "low"
    fired = schedules.fire_due(now=1e10)
    assert lanes_of(fake_redis)["low"] == fired and len(fired) == 1


@pytest.mark.parametrize("body, path", [
    ({"platform_id": "demo", "priority": "urgent"}, "priority"),
    ({"platform_id": "demo", "priority": 1}, "priority"),
    ({"platform_id": "demo", "priority": None}, "priority"),
    ({"platform_id": "demo", "idempotency_key": None}, "idempotency_key"),
    ({"platform_id": "demo", "idempotency_key": ""}, "idempotency_key"),
    ({"platform_id": "demo", "idempotency_key": "k" * 201}, "idempotency_key"),
])
def test_a_bad_priority_or_key_is_a_422_naming_the_field_and_writes_nothing(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, body: dict, path: str
) -> None:
    answer = client.post("/execution/run", json=body)
    assert answer.status_code == 422
    error = answer.get_json()
    assert error["error"] and error["message"] and list(error["details"]) == [path]
    assert fake_redis.dbsize() == 0


def test_a_schedule_refuses_a_bad_priority_and_an_idempotency_key(client: FlaskClient) -> None:
    spec = {"platform_id": "demo", "idempotency_key": "nightly"}
    answer = client.post("/schedules", json={"spec": spec, "interval_s": 3600, "priority": "soon"})
    assert answer.status_code == 422
    assert set(answer.get_json()["details"]) == {"priority", "spec.idempotency_key"}
