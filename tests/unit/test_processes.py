"""Step processes on fakeredis; job ends are written as a worker would write them."""

from __future__ import annotations

import fakeredis
import pytest

from collector.config import Config
from collector.errors import ConflictError, NotFoundError, ValidationError
from collector.specs.registry import Registry
from collector.submit.submitter import Submitter
from collector.workflows.processes import Processes

XHR = {"X-Requested-With": "XMLHttpRequest"}  # what a POST without a JSON body carries to show it is no form


@pytest.fixture
def processes(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> Processes:
    return Processes(Submitter(connection=fake_redis, config=unit_config, registry=registry))


def definition(**overrides: object) -> dict:
    body = {
        "name": "monthly release",
        "steps": [
            {"name": "collect", "tasks": [
                {"name": "pull", "platform_id": "demo", "settings": {"rows": 2}},
                {"name": "review", "manual": True, "prompt": "compare the totals with finance"},
            ]},
            {"name": "publish", "tasks": [{"name": "push", "platform_id": "demo", "settings": {"rows": 1}}]},
        ],
    }
    body.update(overrides)
    return body


def end_job(fake_redis: fakeredis.FakeRedis, job_id: str, status: str) -> None:
    fake_redis.hset(f"collector:job:{job_id}", mapping={"status": status, "result": '{"rows": 2}'})


def task(view: dict, name: str) -> dict:
    return next(t for s in view["steps"] for t in s["tasks"] if t["name"] == name)


def test_bad_definitions_list_every_error_with_its_path(processes: Processes, fake_redis) -> None:
    body = definition()
    body["steps"][0]["tasks"][0]["settings"] = {"rows": "two"}
    body["steps"][1]["tasks"].append({"name": "pull", "manual": True})
    body["extra"] = 1
    with pytest.raises(ValidationError) as caught:
        processes.run(body)
    assert set(caught.value.details) == {"steps.0.tasks.0.settings.rows", "steps.1.tasks.1.name", "extra"}
    assert fake_redis.dbsize() == 0


def test_a_process_runs_step_by_step_with_sign_off(processes: Processes, fake_redis) -> None:
    view = processes.run(definition())
    pid = view["process_id"]
    assert view["status"] == "running" and view["steps"][0]["status"] == "running"
    assert task(view, "review")["status"] == "waiting" and task(view, "push")["status"] == "pending"
    pull_job = task(view, "pull")["job_id"]
    assert fake_redis.hget(f"collector:job:{pull_job}", "process_id").decode() == pid
    end_job(fake_redis, pull_job, "finished")
    view = processes.get(pid)
    assert task(view, "pull")["status"] == "ok" and view["current_step"] == 0, "waits for the person"
    with pytest.raises(ConflictError):
        processes.ack(pid, "push", {"result": "OK"}, by="ann")
    view = processes.ack(pid, "review", {"result": "OK", "reason": "totals match"}, by="ann")
    assert view["steps"][0]["status"] == "passed" and view["steps"][0]["finalized_at"]
    assert view["current_step"] == 1 and task(view, "push")["status"] == "running"
    with pytest.raises(ConflictError, match="not open"):
        processes.ack(pid, "review", {"result": "FAIL", "reason": "changed my mind"}, by="bob")
    end_job(fake_redis, task(view, "push")["job_id"], "finished")
    view = processes.get(pid)
    assert view["status"] == "passed" and view["ended_at"]
    acks = [h for h in view["history"] if h["event"] == "ack"]
    assert acks == [{"at": acks[0]["at"], "event": "ack", "step": "collect", "task": "review", "attempt": 1,
                     "result": "OK", "by": "ann", "reason": "totals match"}]
    assert fake_redis.sismember("collector:processes:active", pid) == 0


def test_a_failed_task_is_rerun_before_its_step_is_finalized(processes: Processes, fake_redis) -> None:
    pid = processes.run(definition())["process_id"]
    view = processes.get(pid)
    end_job(fake_redis, task(view, "pull")["job_id"], "failed")
    processes.ack(pid, "review", {"result": "OK"}, by="ann")
    view = processes.get(pid)
    assert task(view, "pull")["status"] == "fail" and view["steps"][0]["status"] == "blocked"
    view = processes.rerun(pid, "pull", by="ann")
    second = task(view, "pull")
    assert second["status"] == "running" and second["attempt"] == 2 and second["job_id"].endswith("-2")
    end_job(fake_redis, second["job_id"], "finished")
    assert processes.get(pid)["current_step"] == 1


def test_giving_up_a_failed_task_fails_the_step_and_the_process(processes: Processes, fake_redis) -> None:
    pid = processes.run(definition())["process_id"]
    end_job(fake_redis, task(processes.get(pid), "pull")["job_id"], "failed")
    with pytest.raises(ValidationError, match="reason"):
        processes.ack(pid, "pull", {"result": "FAIL"}, by="ann")
    view = processes.ack(pid, "pull", {"result": "FAIL", "reason": "source is gone"}, by="ann")
    assert view["status"] == "failed" and view["steps"][0]["status"] == "failed"
    with pytest.raises(ConflictError):
        processes.rerun(pid, "pull", by="ann")


def test_a_manual_fail_can_be_rerun(processes: Processes) -> None:
    pid = processes.run(definition())["process_id"]
    processes.ack(pid, "review", {"result": "FAIL", "reason": "totals differ"}, by="ann")
    view = processes.rerun(pid, "review", by="ann")
    assert task(view, "review")["status"] == "waiting"


def test_a_new_version_voids_unfinished_processes_of_the_old_one(processes: Processes) -> None:
    old = processes.run(definition(version="1"))["process_id"]
    same = processes.run(definition(version="1"))["process_id"]
    new = processes.run(definition(version="2"))
    assert sorted(new["replaced"]) == sorted([old, same])
    voided = processes.get(old)
    assert voided["status"] == "void" and voided["replaced_by"] == new["process_id"]


def test_unknown_process_and_task(processes: Processes) -> None:
    with pytest.raises(NotFoundError):
        processes.get("nope")
    pid = processes.run(definition())["process_id"]
    with pytest.raises(NotFoundError):
        processes.ack(pid, "ghost", {"result": "OK"}, by="ann")


def test_process_api(client) -> None:
    created = client.post("/process/run", json=definition())
    assert created.status_code == 201
    pid = created.get_json()["process_id"]
    assert client.get(f"/process/get?process_id={pid}").get_json()["status"] == "running"
    ack = client.post(f"/process/ack?process_id={pid}&task=review", json={"result": "MAYBE", "by": "x"})
    assert ack.status_code == 422
    odd = client.post(f"/process/ack?process_id={pid}&task=review", json={"result": {}, "by": "x"})
    assert odd.status_code == 422 and "result" in odd.get_json()["details"]
    ok = client.post(f"/process/ack?process_id={pid}&task=review", json={"result": "OK", "by": "ann"})
    assert ok.status_code == 200
    again = client.post(f"/process/rerun?process_id={pid}&task=review", headers=XHR)
    assert again.status_code == 200 and again.get_json()["steps"][0]["tasks"][1]["attempt"] == 2
    conflict = client.post(f"/process/rerun?process_id={pid}&task=push", headers=XHR)
    assert conflict.status_code == 409 and conflict.get_json()["error"] == "conflict"
    assert client.get("/process/get").status_code == 400
    assert client.get("/process/get?process_id=missing").status_code == 404


def test_a_task_with_a_state_key_runs_as_a_job_of_that_key(processes: Processes, fake_redis) -> None:
    body = definition()
    body["steps"][0]["tasks"][0]["state_key"] = "monthly-pull"
    view = processes.run(body)
    job_id = task(view, "pull")["job_id"]
    assert fake_redis.hget(f"collector:job:{job_id}", "state_key") == b"monthly-pull"

    bad, before = definition(), fake_redis.dbsize()
    bad["steps"][0]["tasks"][0]["state_key"] = "no spaces allowed"
    bad["steps"][0]["tasks"][1]["state_key"] = "k"
    with pytest.raises(ValidationError) as caught:
        processes.run(bad)
    assert set(caught.value.details) == {"steps.0.tasks.0.state_key", "steps.0.tasks.1"}
    assert fake_redis.dbsize() == before


def test_a_task_job_is_queued_once_when_the_process_is_advanced_twice_at_once(
    processes: Processes, fake_redis: fakeredis.FakeRedis
) -> None:
    """A process is advanced from anywhere (every pool's tick, every GET): one advance may find a task `running`
    with no job record yet, between another's write of the document and its submit, and submit the task's job too.
    The job is queued once, and its record is never written over."""
    submit = processes.submitter.submit
    raced: list[str] = []

    def submit_after_another_advance(spec: dict, **kwargs: object) -> dict:
        if not raced:
            raced.append(str(kwargs["job_id"]))
            processes.advance(kwargs["extra"]["process_id"])  # type: ignore[index]
        return submit(spec, **kwargs)

    processes.submitter.submit = submit_after_another_advance  # type: ignore[method-assign]
    view = processes.run(definition())
    job_id = task(view, "pull")["job_id"]
    assert raced == [job_id]
    assert fake_redis.lrange("rq:queue:collector", 0, -1) == [job_id.encode()]
    events = [e for e in fake_redis.lrange(f"collector:job:{job_id}:events:list", 0, -1) if b'"queued"' in e]
    assert len(events) == 1, events
    end_job(fake_redis, job_id, "finished")
    answer = submit({"platform_id": "demo", "settings": {"rows": 2}}, job_id=job_id, extra={"process_id": "x"})
    assert answer == {"job_id": job_id, "status": "already_submitted"}
    assert fake_redis.hget(f"collector:job:{job_id}", "status") == b"finished"
    assert fake_redis.lrange("rq:queue:collector", 0, -1) == [job_id.encode()]
