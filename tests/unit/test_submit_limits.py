"""Limits on what clients may ask for: the longest timeout, schedules (count, interval), the submit rate."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import fakeredis
import flask
import pytest
from flask.testing import FlaskClient
from rq.job import Job
from rq.serializers import JSONSerializer

from collector import defaults
from collector.app import create_app
from collector.config import Config
from collector.errors import ConfigError
from collector.specs.registry import Registry
from collector.store import ratelimit

T0 = 1_699_999_995.0  # 15 s into a rate window (windows start at multiples of 60 s)


def demo(**extra: Any) -> dict[str, Any]:
    return {"platform_id": "demo", "settings": {"rows": 1}, **extra}


def app_for(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry) -> flask.Flask:
    app = create_app(config, connection=fake_redis, registry=registry, dashboard=False)

    @app.before_request
    def name_the_caller() -> None:  # what authentication does with a named token
        if flask.request.headers.get("X-Caller"):
            flask.g.caller = flask.request.headers["X-Caller"]

    return app


# -- timeout_s ---------------------------------------------------------------------------------------------


def test_a_week_long_timeout_is_refused_and_writes_nothing(client: FlaskClient,
                                                           fake_redis: fakeredis.FakeRedis) -> None:
    # The attack: two jobs with timeout_s 604800 held the whole pool for a week.
    response = client.post("/execution/run", json=demo(timeout_s=604800))
    body = response.get_json()
    assert response.status_code == 422 and "timeout_s" in body["details"]
    assert "86400" in body["details"]["timeout_s"][0] and "COLLECTOR_MAX_TIMEOUT_S" in body["details"]["timeout_s"][0]
    assert fake_redis.dbsize() == 0
    assert client.post("/execution/run", json=demo(timeout_s=86400)).status_code == 202


def test_the_longest_timeout_is_a_setting(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                          registry: Registry) -> None:
    config = dataclasses.replace(unit_config, max_timeout_s=3600)
    client = app_for(fake_redis, config, registry).test_client()
    assert client.post("/execution/run", json=demo(timeout_s=3601)).status_code == 422
    schedule = client.post("/schedules", json={"spec": demo(timeout_s=3601), "interval_s": 3600})
    assert schedule.status_code == 422 and "spec.timeout_s" in schedule.get_json()["details"]
    job_id = client.post("/execution/run", json=demo(timeout_s=3600)).get_json()["job_id"]
    assert Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer).timeout == 3600


def test_a_service_default_over_the_longest_timeout_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="COLLECTOR_JOB_TIMEOUT_S=90000 is over COLLECTOR_MAX_TIMEOUT_S=86400"):
        Config.from_env({"COLLECTOR_JOB_TIMEOUT_S": "90000"})
    assert Config.from_env({"COLLECTOR_JOB_TIMEOUT_S": "90000", "COLLECTOR_MAX_TIMEOUT_S": "90000"}).job_timeout_s


def test_a_platform_timeout_over_the_longest_is_cut_to_it(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    platform = registry.get("demo")
    assert platform is not None
    monkeypatch.setattr(platform.cls, "TIMEOUT_S", 30 * 24 * 3600)
    with caplog.at_level(logging.WARNING):
        client = app_for(fake_redis, unit_config, registry).test_client()
    assert any("platform demo: TIMEOUT_S=2592000 is over COLLECTOR_MAX_TIMEOUT_S=86400" in r.getMessage()
               for r in caplog.records)
    job_id = client.post("/execution/run", json=demo()).get_json()["job_id"]
    assert Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer).timeout == defaults.MAX_TIMEOUT_S


# -- schedules ---------------------------------------------------------------------------------------------


def test_two_hundred_one_second_schedules_are_all_refused(client: FlaskClient,
                                                          fake_redis: fakeredis.FakeRedis) -> None:
    # The attack: 200 schedules of interval_s 1 in one second.
    answers = [client.post("/schedules", json={"spec": demo(), "interval_s": 1}) for _ in range(200)]
    assert {a.status_code for a in answers} == {422}
    message = answers[0].get_json()["details"]["interval_s"][0]
    assert "from 60" in message and "COLLECTOR_SCHEDULE_MIN_INTERVAL_S" in message
    assert fake_redis.dbsize() == 0


@pytest.mark.parametrize("cron", ["* * * * * *", "* * * * * */30", "0 0 * * * 0,1", "*/15 * * * * 0,45"])
def test_a_cron_with_ticks_closer_than_the_minimum_is_refused(client: FlaskClient,
                                                              fake_redis: fakeredis.FakeRedis, cron: str) -> None:
    response = client.post("/schedules", json={"spec": demo(), "cron": cron})
    assert response.status_code == 422, response.get_json()
    assert "at least 60 s apart" in response.get_json()["details"]["cron"][0]
    assert fake_redis.dbsize() == 0


def test_crons_a_minute_apart_or_more_are_fine(client: FlaskClient) -> None:
    for cron in ("* * * * *", "0 0 29 2 *", "0,1 * * * *", "*/15 9-17 * * 1-5"):
        assert client.post("/schedules", json={"spec": demo(), "cron": cron}).status_code == 201, cron


def test_the_service_holds_at_most_max_schedules(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                                  registry: Registry) -> None:
    client = app_for(fake_redis, dataclasses.replace(unit_config, max_schedules=3), registry).test_client()
    made = [client.post("/schedules", json={"spec": demo(), "interval_s": 3600}).get_json()["id"] for _ in range(3)]
    keys = set(fake_redis.keys())
    refused = client.post("/schedules", json={"spec": demo(), "interval_s": 3600})
    body = refused.get_json()
    assert refused.status_code == 409 and "COLLECTOR_MAX_SCHEDULES=3" in body["message"]
    assert body["details"] == {"schedules": 3, "max_schedules": 3}
    assert set(fake_redis.keys()) - keys <= {k for k in fake_redis.keys() if b":submits:" in k}
    assert client.delete(f"/schedules/{made[0]}", headers={"X-Requested-With": "x"}).status_code == 200
    assert client.post("/schedules", json={"spec": demo(), "interval_s": 3600}).status_code == 201


def test_the_schedule_limits_are_settings(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                          registry: Registry) -> None:
    config = dataclasses.replace(unit_config, schedule_min_interval_s=1, max_schedules=0)
    client = app_for(fake_redis, config, registry).test_client()
    assert all(client.post("/schedules", json={"spec": demo(), "interval_s": 1}).status_code == 201
               for _ in range(defaults.MAX_SCHEDULES + 1))


# -- the submit rate ---------------------------------------------------------------------------------------


@pytest.fixture
def rated(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry,
          monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setattr(ratelimit, "now", lambda: T0)
    return app_for(fake_redis, dataclasses.replace(unit_config, submits_per_minute=3), registry).test_client()


def test_submits_past_the_rate_get_429_with_retry_after_and_write_nothing(
    rated: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    assert [rated.post("/execution/run", json=demo()).status_code for _ in range(3)] == [202, 202, 202]
    jobs = fake_redis.zcard("collector:jobs")
    refused = rated.post("/execution/run", json=demo())
    body = refused.get_json()
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "45"
    assert body["error"] == "rate_limited" and "COLLECTOR_SUBMITS_PER_MINUTE=3" in body["message"]
    assert body["details"] == {"caller": "anonymous", "submits_per_minute": 3, "retry_after_s": 45}
    assert fake_redis.zcard("collector:jobs") == jobs and fake_redis.llen("rq:queue:collector") == jobs


def test_checks_processes_and_schedules_count_as_submits(rated: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    assert rated.post("/process/run", json={"name": "p", "steps": [
        {"name": "s", "tasks": [{"name": "t", "manual": True, "prompt": "ok?"}]}]}).status_code == 201
    assert rated.post("/schedules", json={"spec": demo(), "interval_s": 3600}).status_code == 201
    assert rated.post("/execution/run", json=demo()).status_code == 202
    for path, body in (("/platforms/check", demo()), ("/schedules", {"spec": demo(), "interval_s": 3600}),
                       ("/process/run", {"name": "q", "steps": [{"name": "s", "tasks": [
                           {"name": "t", "manual": True}]}]})):
        assert rated.post(path, json=body).status_code == 429, path
    assert fake_redis.zcard("collector:schedules:due") == 1


def test_bad_requests_do_not_count_and_each_caller_has_its_own_budget(
    rated: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        assert rated.post("/execution/run", json={"platform_id": "nope"}).status_code == 422
    assert fake_redis.dbsize() == 0, "a refused request writes nothing, not even to its caller's count"
    for _ in range(3):
        assert rated.post("/execution/run", json=demo()).status_code == 202
    assert rated.post("/execution/run", json=demo()).status_code == 429
    ci = {"X-Caller": "ci"}
    assert rated.post("/execution/run", json=demo(), headers=ci).status_code == 202
    monkeypatch.setattr(ratelimit, "now", lambda: T0 + 60)  # the next window
    assert rated.post("/execution/run", json=demo()).status_code == 202


def test_every_api_process_shares_the_count(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "now", lambda: T0)
    config = dataclasses.replace(unit_config, submits_per_minute=2)
    first, second = (app_for(fake_redis, config, registry).test_client() for _ in range(2))
    assert first.post("/execution/run", json=demo()).status_code == 202
    assert second.post("/execution/run", json=demo()).status_code == 202
    assert first.post("/execution/run", json=demo()).status_code == 429
    assert second.post("/execution/run", json=demo()).status_code == 429
    assert 0 < fake_redis.ttl(f"collector:submits:{int(T0 // 60)}:anonymous") <= 60


def test_a_rate_of_zero_turns_the_limit_off(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                            registry: Registry) -> None:
    client = app_for(fake_redis, dataclasses.replace(unit_config, submits_per_minute=0), registry).test_client()
    assert all(client.post("/execution/run", json=demo()).status_code == 202
               for _ in range(defaults.SUBMITS_PER_MINUTE + 1))
    assert not fake_redis.keys("collector:submits:*")
