"""Idempotency keys through the API on fakeredis: one job per key and spec, 409 for another spec, nothing in clear."""

from __future__ import annotations

import dataclasses

import fakeredis
from flask.testing import FlaskClient

from collector.app import create_app
from collector.config import Config
from collector.specs.registry import Registry

SPEC = {"platform_id": "demo", "settings": {"rows": 2}, "idempotency_key": "order-4711", "priority": "high"}


def test_a_second_submit_with_the_key_answers_200_with_the_first_job(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    first = client.post("/execution/run", json=SPEC)
    assert first.status_code == 202 and first.get_json()["status"] == "queued"
    job_id = first.get_json()["job_id"]
    again = client.post("/execution/run", json=SPEC)
    assert again.status_code == 200
    assert again.get_json() == {"job_id": job_id, "status": "queued", "deduplicated": True, "duplicate_of": job_id}
    assert fake_redis.zcard("collector:jobs") == 1 and fake_redis.llen("rq:queue:collector:high") == 1
    assert client.get(f"/execution/get?job_id={job_id}").get_json()["status"] == "queued"


def test_the_same_key_with_another_spec_is_a_409_and_writes_nothing(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    job_id = client.post("/execution/run", json=SPEC).get_json()["job_id"]
    before = sorted(fake_redis.keys("*"))
    other = client.post("/execution/run", json={**SPEC, "settings": {"rows": 3}})
    assert other.status_code == 409
    error = other.get_json()
    assert error["error"] == "conflict" and "'order-4711'" in error["message"] and "new key" in error["message"]
    assert error["details"] == {"idempotency_key": "order-4711", "job_id": job_id}
    assert sorted(fake_redis.keys("*")) == before
    assert client.post("/execution/run", json={**SPEC, "priority": "low"}).status_code == 409, "priority counts"


def test_the_key_lasts_its_ttl_and_is_kept_as_hmacs_only(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    client.post("/execution/run", json=SPEC)
    [key] = fake_redis.keys("collector:idempotency:*")
    assert 0 < fake_redis.ttl(key) <= unit_config.idempotency_ttl_s
    held = fake_redis.get(key)
    assert b"order-4711" not in key and b"order-4711" not in held
    assert b'"rows"' not in held and len(key.split(b":")[-1]) == 64


def test_keys_of_different_callers_never_meet(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    config = dataclasses.replace(unit_config, api_tokens="alice:submit+read:alice-token-0123456789,"
                                                         "bob:submit+read:bob-token-0123456789")
    app = create_app(config, connection=fake_redis, registry=registry, dashboard=False)
    client = app.test_client()
    alice = client.post("/execution/run", json=SPEC, headers={"Authorization": "Bearer alice-token-0123456789"})
    bob = client.post("/execution/run", json=SPEC, headers={"Authorization": "Bearer bob-token-0123456789"})
    assert alice.status_code == 202 and bob.status_code == 202, (alice.get_json(), bob.get_json())
    assert alice.get_json()["job_id"] != bob.get_json()["job_id"]


def test_a_submit_without_a_key_is_never_deduplicated(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    body = {"platform_id": "demo", "settings": {"rows": 2}}
    answers = [client.post("/execution/run", json=body) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].get_json()["job_id"] != answers[1].get_json()["job_id"]
    assert not fake_redis.keys("collector:idempotency:*")
