"""Notifications on fakeredis: targets checked at submit, deliveries queued with a job's end or wait, claimed once,
retried with backoff and given up; the GET callback link resumes a waiting job, with or without API tokens."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from collector import defaults
from collector.app import create_app
from collector.config import Config
from collector.errors import ValidationError
from collector.resources import reach
from collector.sealing import Sealer
from collector.specs.registry import Registry
from collector.store import deliveries
from collector.store.records import JobStore
from collector.store.rq import RQ
from collector.submit.submitter import Submitter
from collector.workflows.delivery import backoff, deliver_due, sign
from collector.workflows.ends import Ends
from collector.workflows.notify import process_changes
from collector.workflows.waiting import suspend
from tests.local_server import LocalServer
from tests.unit.conftest import SECRET_KEY

HOOK_SECRET = "unit-hook-secret-8d2f"


@pytest.fixture
def hooked(unit_config: Config, tmp_path: Path) -> Iterator[Config]:
    """A config whose connections file names a signed hook (on a port nothing listens on) and an unsigned one."""
    path = tmp_path / "connections.toml"
    sealed = Sealer(SECRET_KEY).seal(HOOK_SECRET)
    path.write_text(f'[hook]\nkind = "http"\nbase_url = "http://127.0.0.1:9/hook"\nsecret = {{sealed = "{sealed}"}}\n'
                    '[plain]\nkind = "http"\nbase_url = "http://127.0.0.1:9/plain"\n'
                    f'[files]\nkind = "files"\nroot = "{tmp_path}"\nread_only = true\n')
    config = dataclasses.replace(unit_config, connections=str(path))
    reach.ensure(config)
    yield config


def submitted(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry, notify: object) -> str:
    submitter = Submitter(connection=fake_redis, config=config, registry=registry)
    return submitter.submit({"platform_id": "demo", "settings": {"rows": 1}, "notify": notify})["job_id"]


def test_targets_are_checked_at_submit_each_under_its_path(
    hooked: Config, fake_redis: fakeredis.FakeRedis, registry: Registry
) -> None:
    with pytest.raises(ValidationError) as caught:
        submitted(fake_redis, hooked, registry, [
            {"connection": "nope"}, {"connection": "plain"}, {"connection": "files"},
            {"connection": "hook", "on": ["finished", "boom"]}, "hook"])
    details = caught.value.details
    assert "'nope' is not a connection" in details["notify.0.connection"][0]
    assert "has no secret" in details["notify.1.connection"][0]
    assert "files connection" in details["notify.2.connection"][0]
    assert "notify.3.on" in details and "notify.4" in details
    assert not fake_redis.keys("collector:job:*")
    job_id = submitted(fake_redis, hooked, registry, [{"connection": "hook", "on": ["failed"]}])
    assert JobStore(fake_redis, hooked).read(job_id, "notify")["notify"] == [{"connection": "hook", "on": ["failed"]}]


def test_an_end_queues_one_delivery_per_target_that_asked_for_it(
    hooked: Config, fake_redis: fakeredis.FakeRedis, registry: Registry
) -> None:
    store = JobStore(fake_redis, hooked)
    asked = submitted(fake_redis, hooked, registry, [{"connection": "hook", "on": ["failed"]}])
    other = submitted(fake_redis, hooked, registry, [{"connection": "hook", "on": ["finished"]}])
    for job_id in (asked, other):
        with fake_redis.pipeline() as pipe:
            Ends(store, RQ(fake_redis, hooked)).attempt_ended(
                pipe, job_id, platform_id="demo", attempt=1, status="failed", datasets={}, duration_s=0.1,
                fields={"error": {"type": "FatalError", "message": "no", "traceback": "secret stack"}})
            pipe.execute()
    (claimed,) = deliveries.claim_due(fake_redis, store.keys, limit=10)
    assert claimed.job_id == asked and claimed.event == "failed" and claimed.connection == "hook"
    assert claimed.body["error"] == {"type": "FatalError", "message": "no"} and claimed.body["platform_id"] == "demo"
    # A claimed delivery is held: no other process takes it while its lease runs.
    assert deliveries.claim_due(fake_redis, store.keys, limit=10) == []


def test_a_failing_delivery_is_retried_with_backoff_then_given_up(
    hooked: Config, fake_redis: fakeredis.FakeRedis, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "NOTIFY_ATTEMPTS", 2)
    store = JobStore(fake_redis, hooked)
    job_id = submitted(fake_redis, hooked, registry, [{"connection": "hook"}])
    wait = {"kind": "input", "name": "signin", "prompt": "sign in", "timeout_s": 60}
    assert suspend(fake_redis, store, job_id, wait, {}) == "waiting"
    assert deliver_due(fake_redis, hooked) == 1   # nothing listens on port 9
    tries = [e for e in store.events(job_id) if e["type"] == "notify"]
    assert tries[0]["outcome"] == "retrying" and tries[0]["attempt"] == 1 and "failed" in tries[0]["error"]
    assert deliver_due(fake_redis, hooked) == 0   # not due before its backoff
    fake_redis.zadd(store.keys.deliveries_due(), {tries[0]["delivery"]: 0})
    assert deliver_due(fake_redis, hooked) == 1
    tries = [e for e in store.events(job_id) if e["type"] == "notify"]
    assert [t["outcome"] for t in tries] == ["retrying", "gave_up"]
    assert deliveries.pending(fake_redis, store.keys) == 0 and not fake_redis.keys("collector:notify:delivery:*")
    assert [backoff(n) for n in (1, 2, 3)] == [defaults.NOTIFY_BACKOFF_S * f for f in (1, 2, 4)]
    assert backoff(99) == defaults.NOTIFY_BACKOFF_CAP_S
    assert HOOK_SECRET.encode() not in b"".join(fake_redis.dump(k) or b"" for k in fake_redis.keys("*"))


def test_the_signature_is_an_hmac_sha256_of_the_body() -> None:
    body = b'{"event":"finished"}'
    assert sign("key", body) == "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("tokens", ["", "ops:operate:ops-token-0123456789abcdef"])
def test_the_callback_link_resumes_once_with_the_query_as_input_and_needs_no_api_token(
    tokens: str, unit_config: Config, fake_redis: fakeredis.FakeRedis, registry: Registry
) -> None:
    config = dataclasses.replace(unit_config, api_tokens=tokens)
    client = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    job_id = Submitter(connection=fake_redis, config=config, registry=registry).submit(
        {"platform_id": "demo", "settings": {"rows": 1}})["job_id"]
    wait = {"kind": "input", "name": "signin", "prompt": "sign in", "timeout_s": 60}
    assert suspend(fake_redis, JobStore(fake_redis, config), job_id, wait, {}) == "waiting"
    store = JobStore(fake_redis, config)
    link = client.get(f"/execution/get?job_id={job_id}",
                      headers={"Authorization": "Bearer ops-token-0123456789abcdef"}).get_json()["waiting"]["callback"]
    assert link.startswith(f"/execution/callback?token={job_id}.")

    forged = client.get(f"/execution/callback?token={job_id}.forged&code=x")
    assert forged.status_code == 403 and forged.get_json()["details"]["token"] == ["does not match"]
    assert client.get("/execution/callback?code=x").status_code == 422
    page = client.get(f"{link}&code=abc-123&scope=a&scope=b", headers={"Accept": "text/html"})
    assert page.status_code == 202 and page.mimetype == "text/html" and "queued again" in page.get_data(as_text=True)
    inputs = Sealer(SECRET_KEY).unseal(fake_redis.hget(store.keys.job(job_id), "inputs").decode())
    assert inputs == {"signin": {"code": "abc-123", "scope": ["a", "b"]}}
    again = client.get(f"{link}&code=again")
    # The job no longer waits: a 409, with the used token named (a used token does not hide that).
    assert again.status_code == 409 and again.get_json()["details"]["token"] == ["already used"]
    assert json.loads(fake_redis.hget(store.keys.job(job_id), "resumes")) == 1


def test_a_process_change_tells_step_statuses_manual_waits_and_the_end() -> None:
    before = {"id": "p1", "status": "running", "steps": [
        {"name": "collect", "status": "running", "tasks": [{"name": "pull", "kind": "platform", "status": "running"},
                                                           {"name": "ok?", "kind": "manual", "status": "pending"}]},
        {"name": "publish", "status": "pending", "tasks": []}]}
    blocked = {**before, "steps": [
        {**before["steps"][0], "status": "blocked", "tasks": [{"name": "pull", "kind": "platform", "status": "fail"},
                                                              {"name": "ok?", "kind": "manual", "status": "waiting"}]},
        before["steps"][1]]}
    assert process_changes(before, blocked) == [("step", {"step": "collect", "step_status": "blocked"}),
                                                ("waiting", {"step": "collect", "task": "ok?", "prompt": None})]
    failed = {**blocked, "status": "failed", "steps": [{**blocked["steps"][0], "status": "failed"},
                                                       blocked["steps"][1]]}
    assert process_changes(blocked, failed) == [("step", {"step": "collect", "step_status": "failed"}),
                                                ("failed", {})]
    assert process_changes(failed, failed) == []


def test_a_tick_past_its_budget_hands_deliveries_back_untried(
    hooked: Config, fake_redis: fakeredis.FakeRedis, registry: Registry
) -> None:
    store = JobStore(fake_redis, hooked)
    job_id = submitted(fake_redis, hooked, registry, [{"connection": "hook"}, {"connection": "hook"}])
    wait = {"kind": "input", "name": "signin", "prompt": "sign in", "timeout_s": 60}
    assert suspend(fake_redis, store, job_id, wait, {}) == "waiting"
    assert deliver_due(fake_redis, hooked, budget_s=-1) == 0
    back = deliveries.claim_due(fake_redis, store.keys, limit=10)
    assert len(back) == 2 and all(d.tries == 0 for d in back)
    assert not [e for e in store.events(job_id) if e["type"] == "notify"]


def test_a_redirect_of_the_hook_to_a_private_address_meets_the_egress_policy(
    unit_config: Config, fake_redis: fakeredis.FakeRedis, registry: Registry, tmp_path: Path
) -> None:
    with LocalServer.serving() as server:
        server.route("/hook", lambda seen, n: (302, {"Location": "http://169.254.169.254/latest/meta-data"}, b""))
        sealed = Sealer(SECRET_KEY).seal(HOOK_SECRET)
        path = tmp_path / "hooks.toml"
        path.write_text(f'[hook]\nkind = "http"\nbase_url = "{server.base}/hook"\nsecret = {{sealed = "{sealed}"}}\n')
        config = dataclasses.replace(unit_config, connections=str(path))
        reach.ensure(config)
        store = JobStore(fake_redis, config)
        job_id = submitted(fake_redis, config, registry, [{"connection": "hook"}])
        assert suspend(fake_redis, store, job_id, {"kind": "input", "name": "x", "timeout_s": 60}, {}) == "waiting"
        assert deliver_due(fake_redis, config) == 1
        (seen,) = server.seen("/hook")  # the operator's own host was reached, signed; the redirect was not followed
        assert seen.headers["x-collector-signature"] == sign(HOOK_SECRET, seen.body)
        (tried,) = [e for e in store.events(job_id) if e["type"] == "notify"]
        assert tried["outcome"] == "retrying" and "169.254.169.254 (link-local)" in tried["error"], tried
