"""A step process with real workers: jobs run, a person signs off, the next step starts, history is kept."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import PoolProcess, ServedApp, wait_for


def step_task(view: dict, name: str) -> dict:
    return next(t for s in view["steps"] for t in s["tasks"] if t["name"] == name)


def test_a_release_process_with_sign_off_runs_to_the_end(
    served: ServedApp, start_pool: Callable[..., PoolProcess]
) -> None:
    start_pool(2)
    status, view = served.request("POST", "/process/run", {
        "name": "release",
        "steps": [
            {"name": "collect", "tasks": [
                {"name": "pull-a", "platform_id": "demo", "settings": {"rows": 20}},
                {"name": "pull-b", "platform_id": "demo", "settings": {"rows": 30}},
                {"name": "review", "manual": True, "prompt": "check the counts"},
            ]},
            {"name": "publish", "tasks": [{"name": "push", "platform_id": "demo", "settings": {"rows": 5}}]},
        ],
    })
    assert status == 201, view
    pid = view["process_id"]

    def get() -> dict:
        return served.request("GET", f"/process/get?process_id={pid}")[1]

    view = wait_for(lambda: (v := get()) and step_task(v, "pull-a")["status"] == "ok"
                    and step_task(v, "pull-b")["status"] == "ok" and v, what="both pulls to finish")
    assert step_task(view, "pull-b")["result"] == {"rows": 30}
    assert view["current_step"] == 0 and step_task(view, "push")["status"] == "pending", "publish waits for sign-off"
    status, view = served.request("POST", f"/process/ack?process_id={pid}&task=review",
                                  {"result": "OK", "note": "ann", "reason": "counts match"})
    assert status == 200 and view["steps"][0]["status"] == "passed"
    view = wait_for(lambda: (v := get())["status"] == "passed" and v, what="the process to pass")
    assert [h["event"] for h in view["history"] if h["event"] != "task"] == [
        "created", "step_started", "ack", "step_passed", "step_started", "step_passed", "process_passed",
    ]
    ack = next(h for h in view["history"] if h["event"] == "ack")
    assert ack["by"] == "anonymous" and ack["note"] == "ann"
    changes = [(h["task"], h["status"], h["by"]) for h in view["history"] if h["event"] == "task"]
    assert changes[-1] == ("push", "ok", "collector") and ("review", "ok", "anonymous") in changes
    assert [c[1] for c in changes if c[0] == "pull-a"] == ["running", "ok"]
    _, job = served.request("GET", f"/execution/get?job_id={step_task(view, 'push')['job_id']}")
    assert job["status"] == "finished" and job["process_id"] == pid


def test_a_failed_task_given_up_fails_the_process(served: ServedApp, start_pool: Callable[..., PoolProcess]) -> None:
    start_pool(1)
    _, view = served.request("POST", "/process/run", {
        "name": "fragile",
        "steps": [{"name": "only", "tasks": [
            {"name": "breaks", "platform_id": "demo", "settings": {"rows": 5, "fail_at": 2}}]}],
    })
    pid = view["process_id"]
    view = wait_for(lambda: (v := served.request("GET", f"/process/get?process_id={pid}")[1])["steps"][0]["status"]
                    == "blocked" and v, what="the step to block on the failure")
    assert "row 2" in step_task(view, "breaks")["error"]["message"]
    status, view = served.request("POST", f"/process/ack?process_id={pid}&task=breaks",
                                  {"result": "FAIL", "reason": "bad input"})
    assert status == 200 and view["status"] == "failed"
