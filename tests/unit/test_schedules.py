"""Schedules on fakeredis: validation, exactly one job per tick, missed ticks collapse, secrets sealed."""

from __future__ import annotations

import fakeredis
import pytest

from collector.config import Config
from collector.errors import NotFoundError, ValidationError
from collector.specs.registry import Registry
from collector.submit.submitter import Submitter
from collector.workflows.schedules import Schedules, next_tick

XHR = {"X-Requested-With": "XMLHttpRequest"}  # what a POST without a JSON body carries to show it is no form

T0 = 1_700_000_000.0  # a fixed "now" so ticks are predictable


@pytest.fixture
def schedules(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> Schedules:
    return Schedules(Submitter(connection=fake_redis, config=unit_config, registry=registry))


def demo(rows: int = 1) -> dict:
    return {"platform_id": "demo", "settings": {"rows": rows}}


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"spec": demo()}, {"cron"}),
        ({"spec": demo(), "cron": "* * * * *", "interval_s": 5}, {"cron"}),
        ({"spec": demo(), "cron": "every monday"}, {"cron"}),
        ({"spec": demo(), "interval_s": 0}, {"interval_s"}),
        ({"spec": demo(), "interval_s": 10**18}, {"interval_s"}),
        ({"spec": demo(), "cron": "0 0 30 2 *"}, {"cron"}),
        ({"spec": {"platform_id": "demo", "settings": {"rows": "x"}}, "interval_s": 300, "when": 1},
         {"spec.settings.rows", "when"}),
        ({"interval_s": 300}, {"spec"}),
    ],
)
def test_bad_schedules_list_every_error_and_write_nothing(
    schedules: Schedules, fake_redis: fakeredis.FakeRedis, body: dict, paths: set[str]
) -> None:
    with pytest.raises(ValidationError) as caught:
        schedules.create(body)
    assert set(caught.value.details) == paths
    assert fake_redis.dbsize() == 0


def test_each_tick_runs_exactly_once_however_many_processes_fire(
    schedules: Schedules, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    created = schedules.create({"name": "every minute", "spec": demo(), "interval_s": 60}, now=T0)
    assert created["next_run_at"] == "2023-11-14T22:14:20.000Z"  # the form of every other timestamp
    assert schedules.fire_due(now=T0 + 30) == []
    other = Schedules(Submitter(connection=fake_redis, config=unit_config, registry=registry))
    fired = schedules.fire_due(now=T0 + 61)
    assert fired == [f"{created['id']}-{int(T0 + 60)}"]
    assert other.fire_due(now=T0 + 61) == [], "a second process does not run the same tick"
    assert fake_redis.hget(f"collector:job:{fired[0]}", "schedule_id").decode() == created["id"]
    view = schedules.get(created["id"])
    assert view["runs"] == 1 and view["last_job_id"] == fired[0]


def test_ticks_missed_while_down_run_once_on_return(schedules: Schedules) -> None:
    created = schedules.create({"spec": demo(), "interval_s": 60}, now=T0)
    fired = schedules.fire_due(now=T0 + 600.5)   # ten ticks were missed
    assert len(fired) == 1
    assert schedules.fire_due(now=T0 + 601) == []
    assert schedules.get(created["id"])["next_run_at"].startswith("2023-11-14T22:24:20")  # T0 + 660


def test_cron_ticks_follow_the_expression() -> None:
    assert next_tick(cron="*/15 * * * *", interval_s=None, anchor=0, after=T0) == 1_700_000_100.0
    assert next_tick(cron=None, interval_s=60, anchor=T0, after=T0 + 59) == T0 + 60
    assert next_tick(cron=None, interval_s=60, anchor=T0, after=T0 + 60) == T0 + 120


def test_list_and_delete(schedules: Schedules) -> None:
    first = schedules.create({"spec": demo(), "cron": "0 * * * *"})
    second = schedules.create({"spec": demo(2), "interval_s": 3600})
    assert {s["id"] for s in schedules.all()} == {first["id"], second["id"]}
    schedules.delete(first["id"])
    assert [s["id"] for s in schedules.all()] == [second["id"]]
    with pytest.raises(NotFoundError):
        schedules.delete(first["id"])
    assert schedules.fire_due(now=T0 * 2) and all(s["runs"] == 1 for s in schedules.all())


def test_schedule_api_answers(client) -> None:
    created = client.post("/schedules", json={"spec": demo(), "interval_s": 300})
    assert created.status_code == 201
    schedule_id = created.get_json()["id"]
    assert client.get("/schedules").get_json()["schedules"][0]["id"] == schedule_id
    assert client.get(f"/schedules/{schedule_id}").get_json()["interval_s"] == 300
    bad = client.post("/schedules", json={"spec": demo(), "cron": "nope"})
    assert bad.status_code == 422 and "cron" in bad.get_json()["details"]
    assert client.delete(f"/schedules/{schedule_id}", headers=XHR).get_json() == {"deleted": schedule_id}
    assert client.delete(f"/schedules/{schedule_id}", headers=XHR).status_code == 404
    assert client.get("/schedules/a:b*").status_code == 400


def test_a_paused_schedule_does_not_fire_and_resumes_from_now(schedules: Schedules) -> None:
    made = schedules.create({"spec": demo(), "interval_s": 3600}, now=T0)
    assert made["paused"] is False and made["next_run_at"] is not None
    paused = schedules.pause(made["id"])
    assert paused["paused"] is True and paused["next_run_at"] is None and paused["paused_at"]
    assert schedules.pause(made["id"])["paused_at"] == paused["paused_at"], "pausing twice changes nothing"
    assert schedules.fire_due(now=T0 + 10 * 3600) == [], "a paused schedule does not fire"
    resumed = schedules.resume(made["id"], now=T0 + 10 * 3600 + 100)
    assert resumed["paused"] is False and resumed["paused_at"] is None
    assert schedules.fire_due(now=T0 + 11 * 3600 + 99) == [], "ticks missed while paused do not run"
    assert len(schedules.fire_due(now=T0 + 11 * 3600 + 100)) == 1, "the next run is one interval from the resume"
    assert schedules.resume(made["id"], now=T0 + 12 * 3600) == schedules.get(made["id"]), "not paused: unchanged"
    with pytest.raises(NotFoundError):
        schedules.pause("nosuch")


def test_schedules_pause_and_resume_through_the_api(client) -> None:
    body = {"spec": demo(), "interval_s": 3600}
    schedule = client.post("/schedules", json=body).get_json()
    paused = client.post(f"/schedules/{schedule['id']}/pause", headers=XHR)
    assert paused.status_code == 200 and paused.get_json()["paused"] is True
    page = client.get("/ui/schedules").get_data(as_text=True)
    assert "paused" in page and f"/ui/schedules/{schedule['id']}/resume" in page
    resumed = client.post(f"/schedules/{schedule['id']}/resume", headers=XHR).get_json()
    assert resumed["paused"] is False and resumed["next_run_at"] >= schedule["next_run_at"]
    assert client.post("/schedules/nosuch/pause", headers=XHR).status_code == 404


def left_of(fake_redis: fakeredis.FakeRedis, schedule_id: str) -> tuple[float | None, dict]:
    return (fake_redis.zscore("collector:schedules:due", schedule_id),
            fake_redis.hgetall(f"collector:schedule:{schedule_id}"))


@pytest.mark.parametrize("gap", ["before the due time moves", "after the job is submitted"])
def test_a_schedule_deleted_while_its_tick_fires_is_not_brought_back(
    schedules: Schedules, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch, gap: str
) -> None:
    """A tick reads the schedule, then moves its due time on and counts its run: a DELETE answered in between
    must not be undone by those writes (a hash of three fields and a due time, which broke GET /schedules)."""
    from collector.workflows import schedules as module

    schedule_id = schedules.create({"spec": demo(), "interval_s": 60}, now=T0)["id"]
    if gap == "before the due time moves":
        real = module.next_tick
        monkeypatch.setattr(module, "next_tick", lambda **kw: (schedules.delete(schedule_id), real(**kw))[1])
        assert schedules.fire_due(now=T0 + 61) == []
    else:
        submit = schedules.submitter.submit
        monkeypatch.setattr(schedules.submitter, "submit",
                            lambda spec, **kw: (submit(spec, **kw), schedules.delete(schedule_id))[0])
        assert schedules.fire_due(now=T0 + 61) == [f"{schedule_id}-{int(T0 + 60)}"]
    assert left_of(fake_redis, schedule_id) == (None, {})
    assert schedules.all() == []
    with pytest.raises(NotFoundError):
        schedules.pause(schedule_id)


def test_a_schedule_hash_of_a_few_fields_reads_as_no_schedule_and_is_cleared(
    schedules: Schedules, fake_redis: fakeredis.FakeRedis
) -> None:
    """What a write racing a delete left before: it lists as nothing, answers 404, and its next tick clears it."""
    kept = schedules.create({"spec": demo(), "interval_s": 60}, now=T0)
    fake_redis.hset("collector:schedule:leftover", mapping={"last_job_id": "x", "runs": "1"})
    fake_redis.zadd("collector:schedules:due", {"leftover": T0})
    assert [s["id"] for s in schedules.all()] == [kept["id"]]
    with pytest.raises(NotFoundError):
        schedules.get("leftover")
    schedules.fire_due(now=T0 + 61)
    assert left_of(fake_redis, "leftover") == (None, {})


def test_a_tick_whose_spec_no_longer_passes_shows_why_until_a_tick_submits(
    schedules: Schedules, fake_redis: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """A platform's settings (or a connection, or the egress allow-list) changed after the schedule was made: its
    ticks submit nothing, and the schedule says why rather than only a log line."""
    made = schedules.create({"spec": demo(), "interval_s": 60}, now=T0)
    key = f"collector:schedule:{made['id']}"
    good = fake_redis.hget(key, "spec")
    fake_redis.hset(key, "spec", '{"platform_id": "demo", "settings": {"rows": "many"}}')
    with caplog.at_level("ERROR", logger="collector.workflows.schedules"):
        assert schedules.fire_due(now=T0 + 61) == []
    shown = schedules.get(made["id"])
    assert shown["runs"] == 0 and shown["last_job_id"] is None
    error = shown["last_error"]
    assert error["error"] == "validation_error" and "settings.rows" in error["details"]
    assert error["tick_at"] == "2023-11-14T22:14:20.000Z" and error["at"]
    assert any(made["id"] in r.getMessage() and "submitted no job" in r.getMessage() for r in caplog.records)
    assert [s["last_error"] for s in schedules.all()] == [error], "the listing shows it too"
    assert fake_redis.dbsize() == 3, "nothing but the schedule, its due time and the tick's claim"

    fake_redis.hset(key, "spec", good)
    [job_id] = schedules.fire_due(now=T0 + 121)
    shown = schedules.get(made["id"])
    assert shown["last_error"] is None and shown["runs"] == 1 and shown["last_job_id"] == job_id


def test_a_failed_tick_shows_in_the_api_the_console_and_the_cli(
    client, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    from markupsafe import escape

    from collector.cli.schedulecommands import _describe

    made = client.post("/schedules", json={"spec": demo(), "interval_s": 60}).get_json()
    fake_redis.hset(f"collector:schedule:{made['id']}", "spec", '{"platform_id": "gone", "settings": {}}')
    Schedules(Submitter(connection=fake_redis, config=unit_config, registry=registry)).fire_due(now=2 * T0)
    shown = client.get(f"/schedules/{made['id']}").get_json()
    error = shown["last_error"]
    [problem] = error["details"]["platform_id"]
    assert error["error"] == "validation_error" and "'gone'" in problem
    page = client.get("/ui/schedules").get_data(as_text=True)
    assert "tick failed" in page and error["tick_at"] in page and f"<code>platform_id</code>: {escape(problem)}" in page
    described = _describe(shown)
    assert f"last error tick at {error['tick_at']}: {error['message']}" in described
    assert f"platform_id: {problem}" in described
