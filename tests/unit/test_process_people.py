"""Processes that end, are found and pass data: finalize, per-task history and attempts, listing, the inbox,
references between tasks. fakeredis; job ends are written as a worker would write them."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest

from collector.config import Config
from collector.errors import ConflictError, NotFoundError, ValidationError
from collector.specs.registry import Registry
from collector.store.index import Cursor
from collector.submit.submitter import Submitter
from collector.workflows.inbox import inbox, list_processes
from collector.workflows.processes import Processes

XHR = {"X-Requested-With": "XMLHttpRequest"}


@pytest.fixture
def processes(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> Processes:
    return Processes(Submitter(connection=fake_redis, config=unit_config, registry=registry))


def two_steps(name: str = "release", **first_step_extra: dict) -> dict:
    return {
        "name": name,
        "steps": [
            {"name": "collect", "tasks": [
                {"name": "pull", "platform_id": "demo", "settings": {"rows": 2}},
                {"name": "review", "manual": True, "prompt": "compare the totals"},
            ]},
            {"name": "publish", "tasks": [{"name": "push", "platform_id": "demo", "settings": {"rows": 1}}]},
        ],
    }


def manual_only(name: str = "sign-offs") -> dict:
    return {"name": name, "steps": [
        {"name": "check", "tasks": [{"name": "legal", "manual": True, "prompt": "legal says yes?"},
                                    {"name": "finance", "manual": True, "prompt": "finance says yes?"}]},
        {"name": "ship", "tasks": [{"name": "announce", "manual": True, "prompt": "announce it"}]}]}


def end_job(fake_redis: fakeredis.FakeRedis, job_id: str, status: str, result: object = None) -> None:
    fake_redis.hset(f"collector:job:{job_id}", mapping={
        "status": status, "result": json.dumps(result if result is not None else {"rows": 2}),
        "ended_at": "2026-01-01T00:00:00.000Z"})


def task(view: dict, name: str) -> dict:
    return next(t for s in view["steps"] for t in s["tasks"] if t["name"] == name)


def changes(view: dict, name: str) -> list[tuple[int, str, str, str]]:
    return [(h["attempt"], h["from"], h["status"], h["by"]) for h in view["history"]
            if h["event"] == "task" and h["task"] == name]


# -- finalize -----------------------------------------------------------------------------------------------
def test_a_manual_fail_fails_its_task_and_finalize_fail_fails_the_process(processes: Processes) -> None:
    pid = processes.run(manual_only())["process_id"]
    view = processes.ack(pid, "legal", {"result": "FAIL", "reason": "contract unsigned"}, by="ann")
    assert task(view, "legal")["status"] == "fail" and view["status"] == "running"
    with pytest.raises(ConflictError, match="no outcome yet"):
        processes.finalize(pid, "check", {"result": "OK"}, by="ops")
    view = processes.finalize(pid, "check", {"result": "FAIL", "note": "no deal this month"}, by="ops")
    assert view["status"] == "failed" and view["ended_at"]
    step = view["steps"][0]
    assert step["status"] == "failed" and step["finalized_by"] == "ops" and step["note"] == "no deal this month"
    assert task(view, "finance")["status"] == "canceled" and task(view, "announce")["status"] == "pending"
    assert changes(view, "finance") == [(1, "pending", "waiting", "collector"), (1, "waiting", "canceled", "ops")]
    assert [h["event"] for h in view["history"]][-3:] == ["step_finalized", "step_failed", "process_failed"]
    with pytest.raises(ConflictError, match="failed"):
        processes.finalize(pid, "check", {"result": "OK"}, by="ops")
    with pytest.raises(ConflictError):
        processes.rerun(pid, "legal", by="ops")


def test_finalize_ok_skips_failed_tasks_and_the_process_passes(processes: Processes) -> None:
    pid = processes.run(manual_only())["process_id"]
    processes.ack(pid, "legal", {"result": "FAIL", "reason": "late"}, by="ann")
    view = processes.ack(pid, "finance", {"result": "OK"}, by="bob")
    assert view["steps"][0]["status"] == "blocked"
    with pytest.raises(ConflictError, match="not open"):
        processes.finalize(pid, "ship", {"result": "OK"}, by="ops")
    view = processes.finalize(pid, "check", {"result": "OK", "reason": "legal signs next week"}, by="ops")
    assert task(view, "legal")["status"] == "skipped" and view["steps"][0]["status"] == "passed"
    assert view["current_step"] == 1 and task(view, "announce")["status"] == "waiting"
    view = processes.ack(pid, "announce", {"result": "OK"}, by="ann")
    assert view["status"] == "passed"


def test_finalize_checks_its_request(processes: Processes) -> None:
    pid = processes.run(manual_only())["process_id"]
    with pytest.raises(ValidationError):
        processes.finalize(pid, "check", {"result": "MAYBE"}, by="ops")
    with pytest.raises(ValidationError, match="unknown"):
        processes.finalize(pid, "check", {"result": "OK", "colour": "red"}, by="ops")
    with pytest.raises(NotFoundError, match="no step 'nope'"):
        processes.finalize(pid, "nope", {"result": "FAIL"}, by="ops")
    with pytest.raises(NotFoundError):
        processes.finalize("missing", "check", {"result": "FAIL"}, by="ops")


def test_finalize_fail_cancels_a_running_task_job(processes: Processes, fake_redis) -> None:
    pid = processes.run(two_steps())["process_id"]
    job_id = task(processes.get(pid), "pull")["job_id"]
    assert fake_redis.hget(f"collector:job:{job_id}", "status") == b"queued"
    view = processes.finalize(pid, "collect", {"result": "FAIL"}, by="ops")
    assert view["status"] == "failed" and task(view, "pull")["status"] == "canceled"
    assert fake_redis.hget(f"collector:job:{job_id}", "status") == b"canceled"
    assert fake_redis.hget(f"collector:job:{job_id}", "canceled_by") == b"ops"


# -- history and attempts ------------------------------------------------------------------------------------
def test_every_task_change_is_in_the_history_and_reruns_add_attempts(processes: Processes, fake_redis) -> None:
    pid = processes.run(two_steps())["process_id"]
    first = task(processes.get(pid), "pull")["job_id"]
    end_job(fake_redis, first, "failed")
    processes.ack(pid, "review", {"result": "OK"}, by="ann")
    view = processes.rerun(pid, "pull", by="ops", note="source is back")
    second = task(view, "pull")["job_id"]
    assert second != first and second.endswith("-2")
    end_job(fake_redis, second, "finished", {"rows": 7})
    view = processes.get(pid)
    assert changes(view, "pull") == [
        (1, "pending", "running", "collector"), (1, "running", "fail", "collector"),
        (2, "fail", "pending", "ops"), (2, "pending", "running", "collector"), (2, "running", "ok", "collector")]
    assert changes(view, "review") == [(1, "pending", "waiting", "collector"), (1, "waiting", "ok", "ann")]
    attempts = task(view, "pull")["attempts"]
    assert [(a["attempt"], a["status"], a["job_id"]) for a in attempts] == [(1, "fail", first), (2, "ok", second)]
    assert attempts[1]["result"] == {"rows": 7} and attempts[0]["result"] == {"rows": 2}
    rerun = next(h for h in view["history"] if h["event"] == "rerun")
    assert rerun["by"] == "ops" and rerun["note"] == "source is back" and rerun["attempt"] == 2


def test_any_task_of_an_open_step_can_be_rerun(processes: Processes, fake_redis) -> None:
    pid = processes.run(two_steps())["process_id"]
    end_job(fake_redis, task(processes.get(pid), "pull")["job_id"], "finished")
    with pytest.raises(ConflictError, match="waiting"):
        processes.rerun(pid, "review", by="ops")
    view = processes.rerun(pid, "pull", by="ops")  # it passed, but the person wants fresh numbers
    assert task(view, "pull")["status"] == "running" and task(view, "pull")["attempt"] == 2
    with pytest.raises(ConflictError, match="running"):
        processes.rerun(pid, "pull", by="ops")


# -- listing and the inbox -----------------------------------------------------------------------------------
def test_processes_are_listed_newest_first_by_page_and_filter(processes: Processes) -> None:
    ids = [processes.run(manual_only(f"p{i % 2}"))["process_id"] for i in range(5)]
    processes.finalize(ids[0], "check", {"result": "FAIL"}, by="ops")
    page = list_processes(processes, limit=2)
    assert [p["process_id"] for p in page["processes"]] == ids[::-1][:2] and page["next_cursor"]
    seen = [p["process_id"] for p in page["processes"]]
    while page["next_cursor"]:
        page = list_processes(processes, limit=2, cursor=Cursor.decode(page["next_cursor"]))
        seen += [p["process_id"] for p in page["processes"]]
    assert seen == ids[::-1]
    failed = list_processes(processes, limit=10, status="failed")["processes"]
    assert [p["process_id"] for p in failed] == [ids[0]] and failed[0]["tasks"]["legal"] == "canceled"
    processes.connection.delete(f"collector:process:{ids[0]}")  # expired
    processes.run(manual_only("p9"))
    assert processes.connection.zscore("collector:processes", ids[0]) is None, "a new process sweeps the index"
    named = list_processes(processes, limit=10, name="p1")["processes"]
    assert {p["process_id"] for p in named} == {ids[1], ids[3]}
    assert named[0]["step"] == {"name": "check", "status": "running"}


def test_the_inbox_lists_what_waits_for_a_person_oldest_first(processes: Processes, fake_redis) -> None:
    pid = processes.run(two_steps())["process_id"]
    end_job(fake_redis, task(processes.get(pid), "pull")["job_id"], "failed")
    processes.get(pid)
    fake_redis.hset("collector:job:oauth1", mapping={
        "status": "waiting", "platform_id": "demo",
        "waiting": json.dumps({"kind": "input", "name": "signin", "prompt": "sign in at https://idp.example/a",
                               "since": "2000-01-01T00:00:00.000Z", "expects": {"code": "the code"}})})
    fake_redis.zadd("collector:waiting:deadlines", {"oauth1": time.time() + 60})
    fake_redis.hset("collector:job:parent1", mapping={  # waits for its children: nobody to ask
        "status": "waiting", "waiting": json.dumps({"kind": "children", "since": "2000-01-01T00:00:00.000Z"})})
    fake_redis.zadd("collector:waiting:deadlines", {"parent1": time.time() + 60})
    items = inbox(processes)["items"]
    assert [i["kind"] for i in items] == ["input", "decision", "sign-off"] or \
        [i["kind"] for i in items] == ["input", "sign-off", "decision"]
    first = items[0]
    assert first["job_id"] == "oauth1" and first["prompt"].startswith("sign in") and first["name"] == "signin"
    assert first["expects"] == {"code": "the code"} and first["endpoint"] == "execution.resume"
    sign_off = next(i for i in items if i["kind"] == "sign-off")
    assert sign_off["task"] == "review" and sign_off["process_id"] == pid and sign_off["prompt"] == "compare the totals"
    decision = next(i for i in items if i["kind"] == "decision")
    assert decision["failed"] == ["pull"] and "finalize" in decision["action"]
    processes.ack(pid, "review", {"result": "OK"}, by="ann")
    processes.finalize(pid, "collect", {"result": "FAIL"}, by="ops")
    assert [i["kind"] for i in inbox(processes)["items"]] == ["input"]


# -- data between tasks --------------------------------------------------------------------------------------
def referring(settings: dict, *, where: int = 1) -> dict:
    body = two_steps()
    body["steps"][where]["tasks"].append({"name": "check", "platform_id": "demo", "settings": settings})
    return body


def test_references_are_checked_when_the_process_is_defined(processes: Processes, fake_redis) -> None:
    cases = {
        "ghost.rows": "names no task",
        "push.rows": "same",
        "review.rows": "manual",
    }
    for target, message in cases.items():
        with pytest.raises(ValidationError) as caught:
            processes.run(referring({"rows": {"$result": target}}))
        assert list(caught.value.details) == ["steps.1.tasks.1.settings.rows"]
        assert message in caught.value.details["steps.1.tasks.1.settings.rows"][0]
    with pytest.raises(ValidationError) as caught:
        processes.run(referring({"rows": {"$result": "push.rows"}}, where=0))
    assert "later" in caught.value.details["steps.0.tasks.2.settings.rows"][0]
    with pytest.raises(ValidationError) as caught:
        processes.run(referring({"rows": {"$result": "pull.rows", "extra": 1}}))
    assert "steps.1.tasks.1.settings.rows" in caught.value.details
    with pytest.raises(ValidationError) as caught:
        processes.run(referring({"colour": {"$result": "pull.rows"}}))
    assert caught.value.details == {"steps.1.tasks.1.settings.colour": ["Unknown field."]}
    assert fake_redis.dbsize() == 0


def test_a_reference_is_resolved_when_the_task_starts(processes: Processes, fake_redis) -> None:
    pid = processes.run(referring({"rows": {"$result": "pull.rows"}, "delay_s": 0}))["process_id"]
    view = processes.get(pid)
    assert task(view, "check")["settings"]["rows"] == {"$result": "pull.rows"}
    end_job(fake_redis, task(view, "pull")["job_id"], "finished", {"rows": 42})
    view = processes.ack(pid, "review", {"result": "OK"}, by="ann")
    job_id = task(view, "check")["job_id"]
    assert json.loads(fake_redis.hget(f"collector:job:{job_id}", "settings"))["rows"] == 42


def test_a_reference_that_does_not_resolve_fails_its_task(processes: Processes, fake_redis) -> None:
    pid = processes.run(referring({"rows": {"$result": "pull.counts.total"}}))["process_id"]
    end_job(fake_redis, task(processes.get(pid), "pull")["job_id"], "finished", {"rows": 42})
    view = processes.ack(pid, "review", {"result": "OK"}, by="ann")
    failed = task(view, "check")
    assert failed["status"] == "fail" and failed["job_id"] is None
    assert "has no 'counts'" in failed["error"]["message"] and "settings.rows" in failed["error"]["details"]


# -- the API -------------------------------------------------------------------------------------------------
def test_the_process_routes(client) -> None:
    pid = client.post("/process/run", json=manual_only()).get_json()["process_id"]
    bad = client.post(f"/process/finalize?process_id={pid}&step=check", json={"result": "NO"})
    assert bad.status_code == 422
    assert client.post(f"/process/finalize?process_id={pid}", json={"result": "OK"}).status_code == 400
    busy = client.post(f"/process/finalize?process_id={pid}&step=check", json={"result": "OK"})
    assert busy.status_code == 409 and busy.get_json()["error"] == "conflict"
    box = client.get("/inbox").get_json()
    assert {i["task"] for i in box["items"]} == {"legal", "finance"}
    assert {i["scope"] for i in box["items"]} == {"operate"} and box["truncated"] is False
    done = client.post(f"/process/finalize?process_id={pid}&step=check", json={"result": "FAIL", "note": "n"})
    assert done.status_code == 200 and done.get_json()["status"] == "failed"
    assert client.get("/inbox").get_json()["items"] == []
    listed = client.get("/process/list?status=failed").get_json()
    assert [p["process_id"] for p in listed["processes"]] == [pid] and listed["next_cursor"] is None
    assert client.get("/process/list?status=bogus").status_code == 400
    assert client.get("/process/list?limit=0").status_code == 400
    assert client.get("/process/list?cursor=%%%").status_code == 400


def test_a_secret_setting_cannot_come_from_a_reference(processes: Processes, fake_redis) -> None:
    body = two_steps()
    body["steps"][1]["tasks"].append({"name": "call", "platform_id": "http_json", "settings": {
        "url": "https://api.example/items", "token": {"$result": "pull.token"}}})
    with pytest.raises(ValidationError) as caught:
        processes.run(body)
    assert list(caught.value.details) == ["steps.1.tasks.1.settings.token"]
    assert "secret" in caught.value.details["steps.1.tasks.1.settings.token"][0]
    assert fake_redis.dbsize() == 0


def test_a_job_submitted_after_its_step_was_finalized_fail_is_cancelled(processes: Processes, fake_redis,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    submit = processes.submitter.submit
    finalized: list[str] = []

    def finalize_first(spec: dict, **kwargs: object) -> dict:
        if not finalized:  # someone finalizes between the process's write and the job's submit
            finalized.append(processes.finalize(process_id[0], "collect", {"result": "FAIL"}, by="ops")["status"])
        return submit(spec, **kwargs)

    process_id: list[str] = []
    monkeypatch.setattr(processes.submitter, "submit", finalize_first)
    monkeypatch.setattr(processes, "advance", lambda pid, _real=processes.advance: (
        process_id.append(pid), _real(pid))[1])
    view = processes.run(two_steps())
    assert finalized == ["failed"] and processes.read(view["process_id"])["status"] == "failed"
    job_id = f"{view['process_id']}-s0t0-1"
    assert fake_redis.hget(f"collector:job:{job_id}", "status") == b"canceled"
