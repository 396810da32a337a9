"""Waiting jobs on fakeredis: resume tokens, the resume endpoint's answers, timeouts, and a fan-out run by hand."""

from __future__ import annotations

import time

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector.config import Config
from collector.errors import JobFailedError, JobSuspended, ValidationError
from collector.run.context import RunContext, child_job_id
from collector.run.runner import Runtime, execute
from collector.sealing import Sealer
from collector.specs.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from collector.workflows.waiting import input_secrets, resume_token, suspend, sweep


def submit(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry, platform_id: str,
           settings: dict) -> str:
    submitter = Submitter(connection=fake_redis, config=config, registry=registry)
    return submitter.submit({"platform_id": platform_id, "settings": settings})["job_id"]


def waiting_job(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry, timeout_s: float = 60) -> str:
    job_id = submit(fake_redis, config, registry, "demo", {"rows": 1})
    wait = {"kind": "input", "name": "signin", "prompt": "sign in at https://idp.invalid", "timeout_s": timeout_s}
    assert suspend(fake_redis, JobStore(fake_redis, config), job_id, wait, {}) == "waiting"
    return job_id


def test_tokens_are_derived_with_the_key_and_differ_per_job_nonce_and_key() -> None:
    token = resume_token("k1", "job", "nonce")
    assert token == resume_token("k1", "job", "nonce") and len(token) == 43
    assert len({token, resume_token("k2", "job", "nonce"), resume_token("k1", "job2", "nonce"),
                resume_token("k1", "job", "nonce2")}) == 4


def test_resume_checks_the_token_once_and_seals_the_input(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = waiting_job(fake_redis, unit_config, registry)
    view = client.get(f"/execution/get?job_id={job_id}").get_json()
    assert view["status"] == "waiting" and view["waiting"]["prompt"] == "sign in at https://idp.invalid"
    token = view["waiting"]["resume_token"]
    assert not any(token.encode() in v for v in fake_redis.hgetall(f"collector:job:{job_id}").values())

    bad = ("B" if token[0] == "A" else "A") + token[1:]
    wrong = client.post(f"/execution/resume?job_id={job_id}", json={"token": bad, "input": {}})
    assert wrong.status_code == 403 and wrong.get_json()["details"]["token"] == ["does not match"]
    assert client.get(f"/execution/get?job_id={job_id}").get_json() == view

    answer = client.post(f"/execution/resume?job_id={job_id}", json={"token": token, "input": {"code": "s3cr3t-code"}})
    assert answer.status_code == 202 and answer.get_json()["status"] == "queued"
    record = fake_redis.hgetall(f"collector:job:{job_id}")
    assert b"s3cr3t-code" not in b"".join(record.values())
    sealer = Sealer(unit_config.secret_key or "")
    assert sealer.unseal(record[b"inputs"].decode()) == {"signin": {"code": "s3cr3t-code"}}
    assert b"wait_nonce" not in record and job_id.encode() in fake_redis.lrange("rq:queue:collector", 0, -1)
    shown = client.get(f"/execution/get?job_id={job_id}").get_json()
    assert shown["status"] == "queued" and "inputs" not in shown and "waiting" not in shown

    again = client.post(f"/execution/resume?job_id={job_id}", json={"token": token, "input": {}})
    assert again.status_code == 409, "a used token does not hide that the job no longer waits"
    assert again.get_json()["details"] == {"job_id": job_id, "status": "queued", "token": ["already used"]}

    wait = {"kind": "input", "name": "otp", "prompt": "the code sent by text"}
    assert suspend(fake_redis, JobStore(fake_redis, unit_config), job_id, wait, {}) == "waiting"
    old = client.post(f"/execution/resume?job_id={job_id}", json={"token": token, "input": {}})
    assert old.status_code == 403 and "already used" in old.get_json()["message"]
    assert client.get(f"/execution/get?job_id={job_id}").get_json()["waiting"]["name"] == "otp"


def test_resume_of_a_job_not_waiting_is_a_conflict_and_bad_bodies_are_named(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, unit_config, registry, "demo", {"rows": 1})
    answer = client.post(f"/execution/resume?job_id={job_id}", json={"token": "x" * 43})
    assert answer.status_code == 409 and answer.get_json()["details"]["status"] == "queued"
    answer = client.post(f"/execution/resume?job_id={job_id}", json=["token"])
    assert answer.status_code == 422
    answer = client.post(f"/execution/resume?job_id={job_id}", data="token=1", content_type="text/plain")
    assert answer.status_code == 400 and "application/json" in answer.get_json()["message"]
    assert client.post("/execution/resume?job_id=nope", json={"token": "x"}).status_code == 404


def test_a_wait_past_its_deadline_is_failed_by_the_sweep(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = waiting_job(fake_redis, unit_config, registry, timeout_s=0.01)
    time.sleep(0.05)
    sweep(fake_redis, unit_config)
    record = JobStore(fake_redis, unit_config).view(job_id)
    assert record is not None and record["status"] == "failed" and record["error"]["type"] == "WaitTimeoutError"
    assert "timeout_s=0.01 s" in record["error"]["message"]
    assert fake_redis.zcard("collector:waiting:deadlines") == 0


def test_wait_for_returns_a_delivered_input_and_suspends_otherwise(unit_config: Config,
                                                                   fake_redis: fakeredis.FakeRedis) -> None:
    from collector.workflows.children import JobLinks

    links = JobLinks(connection=fake_redis, config=unit_config, registry=None)
    store = JobStore(fake_redis, unit_config)
    ctx = RunContext(job_id="j", platform_id="p", attempt=1, store=store, interval_s=1, links=links,
                     inputs={"signin": {"code": "c"}})
    assert ctx.wait_for("signin") == {"code": "c"}
    with pytest.raises(JobSuspended) as raised:
        ctx.wait_for("mfa", prompt="enter the code", timeout_s=5)
    assert raised.value.wait == {"kind": "input", "name": "mfa", "prompt": "enter the code", "timeout_s": 5.0}
    with pytest.raises(ValueError, match="positive"):
        ctx.wait_for("mfa", timeout_s=0)
    bare = RunContext(job_id="j", platform_id="p", attempt=1, store=store, interval_s=1)
    with pytest.raises(ValueError, match="COLLECTOR_SECRET_KEY"):
        bare.wait_for("signin")
    assert input_secrets({"code": "abcd", "n": 1, "deep": [{"t": "long-token"}]}) == ["abcd", "long-token"]


def test_a_fan_out_run_by_hand_spawns_once_and_sums_after_its_children(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")
    parent = submit(fake_redis, unit_config, registry, "date_partitions",
                    {"start_date": "2024-05-01", "end_date": "2024-05-03", "rows_per_day": 2})
    fake_redis.delete("rq:queue:collector")
    with pytest.raises(JobFailedError, match="waiting"):
        execute(parent, runtime)
    assert runtime.outcome is not None and runtime.outcome.status == "waiting"
    store = JobStore(fake_redis, unit_config)
    children = [child_job_id(parent, n) for n in range(3)]
    assert store.read(parent, "children", "status") == {"children": children, "status": "waiting"}
    assert [i.decode() for i in fake_redis.lrange("rq:queue:collector", 0, -1)] == children
    for child in children:
        assert execute(child, runtime)["rows"] == 2
    assert store.read(parent, "status")["status"] == "queued", "the last child's end queued the parent"
    assert execute(parent, runtime) == {"days": 3, "rows": 6, "from": "2024-05-01", "to": "2024-05-03"}
    queued = [i.decode() for i in fake_redis.lrange("rq:queue:collector", 0, -1)]
    assert queued == [*children, parent], "each child was queued once (executing here dequeues nothing)"


def test_wait_children_raises_naming_a_failed_child_or_returns_statuses_when_told(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    from collector.errors import ChildJobError, JobCancelledError
    from collector.workflows.children import JobLinks

    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")
    parent = submit(fake_redis, unit_config, registry, "demo", {"rows": 1})
    links = JobLinks(connection=fake_redis, config=unit_config, registry=registry)
    store = JobStore(fake_redis, unit_config)
    ctx = RunContext(job_id=parent, platform_id="demo", attempt=1, store=store, interval_s=1, links=links)
    good = ctx.spawn("demo", {"rows": 2})
    bad = ctx.spawn("demo", {"rows": 3, "fail_at": 2})
    with pytest.raises(ValidationError):
        ctx.spawn("demo", {"rows": "many"})
    assert store.read(parent, "children")["children"] == [good, bad]
    assert store.read(good, "parent_id")["parent_id"] == parent
    with pytest.raises(JobSuspended):
        ctx.wait_children()
    execute(good, runtime)
    with pytest.raises(JobFailedError):
        execute(bad, runtime)
    with pytest.raises(ChildJobError, match=f"child job {bad} \\(demo\\) ended failed: FatalError: demo failure"):
        ctx.wait_children()
    found = ctx.wait_children(raise_on_failure=False)
    assert found[good] == {"status": "finished", "platform_id": "demo", "result": {"rows": 2}}
    assert found[bad]["status"] == "failed" and found[bad]["error"]["type"] == "FatalError"
    again = RunContext(job_id=parent, platform_id="demo", attempt=2, store=store, interval_s=1, links=links,
                       children=[good, bad])
    assert again.spawn("demo", {"rows": 2}) == good, "a second attempt gets the first child back"
    assert fake_redis.llen("rq:queue:collector") == 3, "parent and two children (the third was refused)"
    again.cancel()
    with pytest.raises(JobCancelledError):
        again.spawn("demo", {})


def test_submit_wait_tells_once_how_to_resume_a_job_waiting_for_input() -> None:
    import io

    from collector.cli.client import wait

    waiting = {"job_id": "j1", "status": "waiting",
               "waiting": {"kind": "input", "name": "signin", "prompt": "sign in at https://idp", "resume_token": "T"}}
    views = iter([waiting, waiting, {"job_id": "j1", "status": "finished"}])

    class Fake:
        def get(self, job_id: str) -> dict:
            return next(views)

    out = io.StringIO()
    assert wait(Fake(), "j1", out=out, poll_s=0)["status"] == "finished"  # type: ignore[arg-type]
    text = out.getvalue()
    assert text.count("waits for input 'signin': sign in at https://idp") == 1
    assert '{"token": "T", "input": {...}}' in text


def test_a_parent_whose_children_outlast_its_wait_fails_and_they_are_cancelled(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    from collector.workflows.children import JobLinks

    parent = submit(fake_redis, unit_config, registry, "demo", {"rows": 1})
    store = JobStore(fake_redis, unit_config)
    links = JobLinks(connection=fake_redis, config=unit_config, registry=registry)
    ctx = RunContext(job_id=parent, platform_id="demo", attempt=1, store=store, interval_s=1, links=links)
    children = [ctx.spawn("demo", {"rows": 1}), ctx.spawn("demo", {"rows": 1})]
    with pytest.raises(JobSuspended) as raised:
        ctx.wait_children(timeout_s=0.01)
    assert suspend(fake_redis, store, parent, raised.value.wait, {}) == "waiting"
    assert fake_redis.sismember("collector:waiting:parents", parent)
    time.sleep(0.05)
    sweep(fake_redis, unit_config)
    record = store.view(parent)
    assert record is not None and record["status"] == "failed" and record["error"]["type"] == "WaitTimeoutError"
    assert children[0] in record["error"]["message"]
    assert [store.read(c, "status", "canceled_by") for c in children] == [
        {"status": "canceled", "canceled_by": f"parent job {parent} (timed out)"}] * 2
    assert not fake_redis.sismember("collector:waiting:parents", parent)


def test_a_parent_cancelled_while_it_spawns_queues_nothing_after_and_stops_every_child(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel is answered between a child's submit and the parent noting it among its children: the cancel
    does not see that child, and the parent's worker hears of the cancel only later. The next spawn is refused
    (the record says cancelled), and the parent's stop stops the child the cancel missed."""
    from collector.workflows import children as children_module
    from collector.workflows.cancel import cancel

    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w1")
    parent = submit(fake_redis, unit_config, registry, "date_partitions",
                    {"start_date": "2024-05-01", "end_date": "2024-05-04", "rows_per_day": 1})
    fake_redis.delete("rq:queue:collector")  # run here, not by a worker
    first, missed, never, last = (child_job_id(parent, n) for n in range(4))
    real_spawn = children_module.JobLinks.spawn

    def spawn_then_cancel(self, parent_id: str, child_id: str, body: dict) -> None:
        real_spawn(self, parent_id, child_id, body)
        if child_id == missed:
            answer = cancel(fake_redis, unit_config, parent, by="ops")
            assert answer["status"] == "started" and answer["children_canceled"] == [first]

    monkeypatch.setattr(children_module.JobLinks, "spawn", spawn_then_cancel)
    with pytest.raises(JobFailedError, match="stopped"):
        execute(parent, runtime)
    store = JobStore(fake_redis, unit_config)
    assert store.read(parent, "status")["status"] == "stopped"
    assert store.read(first, "status")["status"] == "canceled"
    assert store.read(missed, "status", "canceled_by") == {"status": "canceled", "canceled_by": f"parent job {parent}"}
    assert store.read(never, "status") == {} and store.read(last, "status") == {}, "nothing queued after the cancel"
    assert fake_redis.lrange("rq:queue:collector", 0, -1) == []
