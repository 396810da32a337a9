"""Incremental state on fakeredis: the cursor helper, saving with a finished run only, schedules' keys, /state."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector.app import create_app
from collector.config import Config
from collector.devkit.local import local_runtime, run_local
from collector.errors import FatalError, JobFailedError, ValidationError
from collector.incremental import Incremental
from collector.run.runner import Runtime, execute
from collector.specs.job import validate_spec
from collector.specs.registry import Registry
from collector.store.records import Keys
from collector.store.state import States, encode_state
from collector.submit.submitter import Submitter
from collector.workflows.schedules import Schedules
from tests.secret_platforms import make_package

READ, OPERATE = "rtok-1234567890abcdef", "otok-1234567890abcdef"
SAVER = '''
    """A platform that saves what it is told, and fails after saving when told to."""
    from collector.platform import FatalError, Platform


    class Saver(Platform):
        """Saves `value` as the state's `seen`, after noting what the last run saved."""

        def __init__(self, value: int = 0, fail: bool = False, lose_lease: bool = False, meddle: str = "") -> None:
            self.value, self.fail, self.lose_lease, self.meddle = value, fail, lose_lease, meddle

        def _run(self, ctx):
            before = ctx.saved_state.get("seen")
            ctx.save_state({"seen": self.value})
            if self.fail:
                raise FatalError("failing after save_state")
            if self.lose_lease:  # another attempt takes the job over, as a recovery would
                ctx._store.update(ctx.job_id, {"lease": "another-attempt"})
            key = ctx._store.keys.state(ctx.platform_id, ctx.state_key or "none")
            if self.meddle == "reset":  # DELETE /state while this run runs
                ctx._store.connection.delete(key)
            elif self.meddle == "race":  # another run of the key finishes first
                ctx._store.connection.set(key, '{"state": {"seen": -1}, "saved_at": "", "job_id": "other"}')
            return {"before": before}
'''


@pytest.fixture
def saver_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.syspath_prepend(str(tmp_path))
    return Registry.discover(make_package(tmp_path, "stateplatforms", saver=SAVER))


def run(redis: fakeredis.FakeRedis, config: Config, registry: Registry, body: dict[str, Any]) -> Any:
    job_id = Submitter(connection=redis, config=config, registry=registry).submit(body)["job_id"]
    return execute(job_id, Runtime(config, redis, registry))


def saved(redis: fakeredis.FakeRedis, config: Config, platform_id: str, key: str) -> dict[str, Any] | None:
    return States(redis, Keys(config.key_prefix)).read(platform_id, key)


def test_a_finished_run_hands_its_state_to_the_next_run_of_the_key(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    spec = {"platform_id": "saver", "state_key": "orders-eu", "settings": {"value": 1}}
    assert run(fake_redis, unit_config, saver_registry, spec) == {"before": None}
    entry = saved(fake_redis, unit_config, "saver", "orders-eu")
    assert entry is not None and entry["state"] == {"seen": 1} and entry["job_id"]
    assert 0 < fake_redis.ttl(Keys(unit_config.key_prefix).state("saver", "orders-eu")) <= unit_config.state_ttl_s
    assert run(fake_redis, unit_config, saver_registry, {**spec, "settings": {"value": 2}}) == {"before": 1}
    other_key = {**spec, "state_key": "orders-us"}
    assert run(fake_redis, unit_config, saver_registry, other_key) == {"before": None}


def test_a_failed_run_does_not_advance_the_state(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    spec = {"platform_id": "saver", "state_key": "k1", "settings": {"value": 1}}
    run(fake_redis, unit_config, saver_registry, spec)
    with pytest.raises(JobFailedError, match="failing after save_state"):
        run(fake_redis, unit_config, saver_registry, {**spec, "settings": {"value": 9, "fail": True}})
    assert saved(fake_redis, unit_config, "saver", "k1")["state"] == {"seen": 1}  # type: ignore[index]
    assert run(fake_redis, unit_config, saver_registry, {**spec, "settings": {"value": 3}}) == {"before": 1}


def test_a_run_that_lost_its_lease_saves_nothing(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    spec = {"platform_id": "saver", "state_key": "k4", "settings": {"value": 1}}
    run(fake_redis, unit_config, saver_registry, spec)
    with pytest.raises(JobFailedError, match="lost its lease"):
        run(fake_redis, unit_config, saver_registry, {**spec, "settings": {"value": 2, "lose_lease": True}})
    assert saved(fake_redis, unit_config, "saver", "k4")["state"] == {"seen": 1}  # type: ignore[index]


def test_a_reset_while_a_run_runs_holds(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    spec = {"platform_id": "saver", "state_key": "k6", "settings": {"value": 1}}
    run(fake_redis, unit_config, saver_registry, spec)
    assert run(fake_redis, unit_config, saver_registry, {**spec, "settings": {"value": 2, "meddle": "reset"}}) == {
        "before": 1}
    assert saved(fake_redis, unit_config, "saver", "k6") is None
    assert run(fake_redis, unit_config, saver_registry, {**spec, "settings": {"value": 3}}) == {"before": None}


def test_of_two_first_runs_the_first_to_finish_sets_the_bookmark(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    spec = {"platform_id": "saver", "state_key": "k7", "settings": {"value": 5, "meddle": "race"}}
    assert run(fake_redis, unit_config, saver_registry, spec) == {"before": None}
    assert saved(fake_redis, unit_config, "saver", "k7")["state"] == {"seen": -1}  # type: ignore[index]


def test_a_key_that_holds_no_saved_state_is_taken_as_none(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    fake_redis.set(Keys(unit_config.key_prefix).state("saver", "k8"), "not json")
    spec = {"platform_id": "saver", "state_key": "k8", "settings": {"value": 3}}
    assert api(fake_redis, unit_config, saver_registry).get("/state?key=k8").json["states"] == {}
    assert run(fake_redis, unit_config, saver_registry, spec) == {"before": None}
    assert saved(fake_redis, unit_config, "saver", "k8")["state"] == {"seen": 3}  # type: ignore[index]


def test_a_local_run_reads_the_saved_state_and_saves_none(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    spec = {"platform_id": "saver", "state_key": "k5", "settings": {"value": 1}}
    run(fake_redis, unit_config, saver_registry, spec)
    local = run_local({**spec, "settings": {"value": 8}},
                      local_runtime(unit_config, connection=fake_redis, registry=saver_registry))
    assert local.status == "finished" and local.result == {"before": 1}
    assert saved(fake_redis, unit_config, "saver", "k5")["state"] == {"seen": 1}  # type: ignore[index]


def test_a_job_without_a_state_key_keeps_nothing(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    assert run(fake_redis, unit_config, saver_registry, {"platform_id": "saver", "settings": {"value": 5}}) == {
        "before": None}
    assert not list(fake_redis.scan_iter(match=f"{unit_config.key_prefix}:state:*"))


def test_runs_of_a_schedule_share_the_schedule_id_as_their_key(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    config = dataclasses.replace(unit_config, schedule_min_interval_s=60)
    submitter = Submitter(connection=fake_redis, config=config, registry=saver_registry)
    schedules = Schedules(submitter)
    created = schedules.create({"spec": {"platform_id": "saver", "settings": {"value": 7}}, "interval_s": 60},
                               now=1000.0)
    runtime = Runtime(config, fake_redis, saver_registry)
    first = schedules.fire_due(now=1061.0)
    assert execute(first[0], runtime) == {"before": None}
    assert saved(fake_redis, config, "saver", created["id"])["state"] == {"seen": 7}  # type: ignore[index]
    second = schedules.fire_due(now=1121.0)
    assert execute(second[0], runtime) == {"before": 7}


def test_state_must_be_a_small_json_object_without_secrets() -> None:
    assert encode_state({"cursor": "2024-05-01"}) == '{"cursor":"2024-05-01"}'
    with pytest.raises(ValueError, match="JSON object"):
        encode_state(["not", "a", "dict"])
    with pytest.raises(ValueError, match="JSON-able"):
        encode_state({"when": dt.datetime(2024, 5, 1)})
    with pytest.raises(ValueError, match="bytes, over"):
        encode_state({"data": "x" * 70_000})
    with pytest.raises(ValueError, match="secret value"):
        encode_state({"next": "https://api/x?key=tok-123456"}, secrets=["tok-123456"])


def test_a_state_key_is_checked_with_the_spec(registry: Registry) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_spec({"platform_id": "demo", "settings": {}, "state_key": "no spaces/allowed"}, registry)
    assert "state_key" in caught.value.details and "letters, digits" in caught.value.details["state_key"][0]
    with pytest.raises(ValidationError):
        validate_spec({"platform_id": "demo", "settings": {}, "state_key": 12}, registry)
    assert validate_spec({"platform_id": "demo", "settings": {}, "state_key": None}, registry).state_key is None
    good = validate_spec({"platform_id": "demo", "settings": {}, "state_key": "a.b-c_1"}, registry)
    assert good.state_key == "a.b-c_1"


def test_incremental_keeps_newer_rows_and_notes_the_newest() -> None:
    first = Incremental("n", start=None, saved={})
    assert [v for v in (3, 1, None, 5) if first.is_new(v)] == [3, 1, None, 5]
    assert first.state() == {"cursor_field": "n", "cursor": 5, "cursor_kind": "int"}
    second = Incremental("n", start=None, saved=first.state())
    assert [v for v in (4, 5, 6, None, 7) if second.is_new(v)] == [6, 7]
    assert second.summary() == {"cursor_field": "n", "since": 5, "next": 7}
    quiet = Incremental("n", start=None, saved=second.state())
    assert not quiet.is_new(2) and not quiet.is_new(7) and quiet.state()["cursor"] == 7, "never moves back"
    below_start = Incremental("n", start="100", saved={})
    assert not below_start.is_new(50) and below_start.state()["cursor"] == 100


def test_incremental_compares_datetimes_and_takes_cursor_start_in_their_kind() -> None:
    start = Incremental("at", start="2024-05-01T00:00:00", saved={})
    rows = [dt.datetime(2024, 4, 30), dt.datetime(2024, 5, 2), dt.datetime(2024, 5, 1, 12)]
    assert [r for r in rows if start.is_new(r)] == rows[1:]
    state = start.state()
    assert state == {"cursor_field": "at", "cursor": "2024-05-02T00:00:00", "cursor_kind": "datetime"}
    assert Incremental("at", start=None, saved=json.loads(json.dumps(state))).since == dt.datetime(2024, 5, 2)
    assert Incremental("n", start="10", saved={}).is_new(11) is True
    aware = Incremental("at", start="2024-05-01 12:00:00", saved={})   # no zone: taken in the values' zone
    assert [aware.is_new(dt.datetime(2024, 5, 1, h, tzinfo=dt.UTC)) for h in (11, 13)] == [False, True]
    with pytest.raises(FatalError, match="cursor_start 'soon' is not a int"):
        Incremental("n", start="soon", saved={}).is_new(11)


def test_incremental_refuses_a_bookmark_of_another_field_and_mixed_kinds() -> None:
    with pytest.raises(FatalError, match="cursor field 'a', not 'b'"):
        Incremental("b", start=None, saved={"cursor_field": "a", "cursor": 1, "cursor_kind": "int"})
    mixed = Incremental("n", start=None, saved={"cursor_field": "n", "cursor": 5, "cursor_kind": "int"})
    with pytest.raises(FatalError, match="cannot be compared"):
        mixed.is_new("six")
    with pytest.raises(FatalError, match="cannot be ordered"):
        mixed.is_new(True)


def api(redis: fakeredis.FakeRedis, config: Config, registry: Registry, tokens: str | None = None) -> FlaskClient:
    config = dataclasses.replace(config, api_tokens=tokens)
    return create_app(config, connection=redis, registry=registry, dashboard=False).test_client()


def test_get_and_delete_state(fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry) -> None:
    run(fake_redis, unit_config, saver_registry, {"platform_id": "saver", "state_key": "k2", "settings": {"value": 4}})
    client = api(fake_redis, unit_config, saver_registry)
    shown = client.get("/state?key=k2")
    assert shown.status_code == 200
    assert shown.json["key"] == "k2" and shown.json["states"]["saver"]["state"] == {"seen": 4}
    assert client.get("/state?key=k2&platform_id=saver").json["states"]["saver"]["state"] == {"seen": 4}
    assert client.get("/state?key=nothing-saved").json == {"key": "nothing-saved", "states": {}}
    reset = client.delete("/state?key=k2", headers={"X-Requested-With": "test"})
    assert reset.status_code == 200 and reset.json == {"key": "k2", "reset": ["saver"]}
    assert client.get("/state?key=k2").json["states"] == {}
    again = run(fake_redis, unit_config, saver_registry,
                {"platform_id": "saver", "state_key": "k2", "settings": {"value": 5}})
    assert again == {"before": None}


@pytest.mark.parametrize("query, field", [("", "key"), ("?key=", "key"), ("?key=a%20b", "key"),
                                          ("?key=" + "k" * 129, "key"), ("?key=ok&platform_id=nope", "platform_id")])
def test_a_bad_state_query_is_a_clear_400_and_changes_nothing(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, saver_registry: Registry, query: str, field: str) -> None:
    client = api(fake_redis, unit_config, saver_registry)
    for answer in (client.get(f"/state{query}"), client.delete(f"/state{query}", headers={"X-Requested-With": "t"})):
        assert answer.status_code == 400
        assert answer.json["error"] and field in answer.json["details"] and answer.json["message"]


def test_resetting_state_needs_operate(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                       saver_registry: Registry) -> None:
    run(fake_redis, unit_config, saver_registry, {"platform_id": "saver", "state_key": "k3", "settings": {"value": 1}})
    client = api(fake_redis, unit_config, saver_registry, tokens=f"reader:read:{READ},ops:operate:{OPERATE}")
    assert client.get("/state?key=k3", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
    refused = client.delete("/state?key=k3", headers={"Authorization": f"Bearer {READ}", "X-Requested-With": "t"})
    assert refused.status_code == 403 and refused.json["details"]["required_scope"] == "operate"
    assert saved(fake_redis, unit_config, "saver", "k3") is not None
    done = client.delete("/state?key=k3", headers={"Authorization": f"Bearer {OPERATE}", "X-Requested-With": "t"})
    assert done.status_code == 200 and done.json["reset"] == ["saver"]


WAITER = '''
    """A platform that saves state, then waits for an approval before it finishes."""
    from collector.platform import Platform


    class Waiter(Platform):
        """Saves `value` as `seen` on its first run, waits for `go`, and finishes after it without saving again."""

        def __init__(self, value: int = 0) -> None:
            self.value = value

        def _run(self, ctx):
            if "go" not in ctx.inputs:
                ctx.save_state({"seen": self.value})
            ctx.wait_for("go", prompt="approve")
            return {"seen_before": ctx.saved_state.get("seen")}
'''


def test_a_state_saved_before_a_wait_is_written_when_the_resumed_run_finishes(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        client: FlaskClient) -> None:
    from collector.errors import JobFailedError as Suspended
    from collector.workflows.waiting import resume

    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.discover(make_package(tmp_path, "waitingstateplatforms", waiter=WAITER))
    spec = {"platform_id": "waiter", "state_key": "approvals", "settings": {"value": 7}}
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=registry).submit(spec)["job_id"]
    runtime = Runtime(unit_config, fake_redis, registry)
    with pytest.raises(Suspended, match="waiting"):
        execute(job_id, runtime)
    assert saved(fake_redis, unit_config, "waiter", "approvals") is None  # not before the job finishes
    view = client.get(f"/execution/get?job_id={job_id}").get_json()
    assert view["status"] == "waiting" and "state_pending" not in view
    resume(fake_redis, unit_config, job_id, token=view["waiting"]["resume_token"], given={"ok": True})
    fake_redis.delete("rq:queue:collector")  # run here, not by a worker
    assert execute(job_id, runtime) == {"seen_before": None}
    assert saved(fake_redis, unit_config, "waiter", "approvals")["state"] == {"seen": 7}  # type: ignore[index]


def test_a_client_may_not_name_a_schedules_id_as_its_state_key(client: FlaskClient,
                                                                fake_redis: fakeredis.FakeRedis) -> None:
    """A schedule's runs keep their bookmark under its id, which any `read` token sees: a client's job saving
    there would move or poison the bookmark of a schedule the client may not change."""
    spec = {"platform_id": "demo", "settings": {"rows": 1}}
    schedule_id = client.post("/schedules", json={"spec": spec, "interval_s": 60}).get_json()["id"]
    before = fake_redis.dbsize()
    response = client.post("/execution/run", json={**spec, "state_key": schedule_id})
    assert response.status_code == 422, response.get_json()
    [message] = response.get_json()["details"]["state_key"]
    assert f"state_key {schedule_id!r} is the id of a schedule" in message and "give another key" in message
    assert fake_redis.dbsize() == before
    assert client.post("/execution/run", json={**spec, "state_key": "my-own-key"}).status_code == 202


def test_no_other_schedule_or_process_task_may_name_a_schedules_id_as_its_state_key(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    spec = {"platform_id": "demo", "settings": {"rows": 1}}
    schedule_id = client.post("/schedules", json={"spec": spec, "interval_s": 60}).get_json()["id"]
    before = fake_redis.dbsize()
    other = client.post("/schedules", json={"spec": {**spec, "state_key": schedule_id}, "interval_s": 60})
    assert other.status_code == 422 and list(other.get_json()["details"]) == ["spec.state_key"], other.get_json()
    process = client.post("/process/run", json={"name": "p", "steps": [{"name": "s", "tasks": [
        {"name": "t", "platform_id": "demo", "settings": {"rows": 1}, "state_key": schedule_id}]}]})
    assert process.status_code == 422, process.get_json()
    assert list(process.get_json()["details"]) == ["steps.0.tasks.0.state_key"]
    assert fake_redis.dbsize() == before
