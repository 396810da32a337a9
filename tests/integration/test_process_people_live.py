"""People in the loop, with real workers and the `collector` command: a manual-only process failed by a person
and finalized, a failed task re-run then skipped, data passed from one task to a later one, and the inbox
showing a job that waits for a sign-in next to the manual tasks waiting for sign-off."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.app import create_app
from collector.config import Config
from tests.conftest import ROOT, PoolProcess, ServedApp, wait_for

ADMIN, OPS, READER = "admin-secret-0123456789abcdef", "ops-secret-0123456789abcdef", "read-secret-0123456789abcdef"
PACKAGE = "inboxplatforms"
SIGNIN = '''
"""Waits for the code an identity provider hands back, then reports how long it was."""
from collector.platform import Platform


class Signin(Platform):
    """One wait for input, with what the input should hold."""

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s

    def _run(self, ctx):
        answer = ctx.wait_for("signin", prompt="sign in at https://idp.invalid/authorize",
                              timeout_s=self.timeout_s, expects={"code": "the code the sign-in page shows"})
        return {"code_chars": len(answer["code"])}
'''


@pytest.fixture
def kit_config(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    target = tmp_path / PACKAGE
    shutil.copytree(ROOT / "platforms", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "signin.py").write_text(textwrap.dedent(SIGNIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return dataclasses.replace(config, platforms_package=PACKAGE,
                               api_tokens=f"admin:admin:{ADMIN},ops:operate:{OPS},viewer:read:{READER}")


@pytest.fixture
def served(kit_config: Config) -> Iterator[ServedApp]:
    served_app = ServedApp(create_app(kit_config))
    yield served_app
    served_app.close()


@pytest.fixture
def pool(kit_config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess]) -> PoolProcess:
    return start_pool(2, kit_config, PYTHONPATH=str(tmp_path))


def cli(url: str, *args: str, token: str = OPS) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "COLLECTOR_URL": url, "COLLECTOR_API_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)


def cli_json(url: str, *args: str, token: str = OPS) -> dict:
    done = cli(url, *args, "--json", token=token)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def as_admin(served: ServedApp, method: str, path: str, body: object = None) -> tuple[int, dict]:
    return served.request(method, path, body, headers={"Authorization": f"Bearer {ADMIN}"})


def task(view: dict, name: str) -> dict:
    return next(t for s in view["steps"] for t in s["tasks"] if t["name"] == name)


def test_a_manual_only_process_is_failed_by_a_person_and_finalized(served: ServedApp, pool: PoolProcess) -> None:
    status, view = as_admin(served, "POST", "/process/run", {"name": "go-live", "steps": [
        {"name": "approvals", "tasks": [{"name": "legal", "manual": True, "prompt": "is the contract signed?"},
                                        {"name": "finance", "manual": True, "prompt": "is the budget there?"}]},
        {"name": "launch", "tasks": [{"name": "announce", "manual": True, "prompt": "tell everyone"}]}]})
    assert status == 201, view
    pid = view["process_id"]
    box = cli_json(served.url, "inbox", token=READER)
    mine = [i for i in box["items"] if i.get("process_id") == pid]
    assert sorted((i["kind"], i["task"], i["scope"]) for i in mine) == [
        ("sign-off", "finance", "operate"), ("sign-off", "legal", "operate")]
    refused = cli(served.url, "ack", pid, "legal", "FAIL", "--reason", "unsigned", token=READER)
    assert refused.returncode == 2 and "insufficient_scope" in refused.stderr

    view = cli_json(served.url, "ack", pid, "legal", "fail", "--reason", "contract unsigned", "--note", "asked Bo")
    assert task(view, "legal")["status"] == "fail" and task(view, "legal")["acked_by"] == "ops"
    early = cli(served.url, "finalize", pid, "approvals", "OK")
    assert early.returncode == 2 and "no outcome yet" in early.stderr, "finance still waits"
    shown = cli(served.url, "processes", pid)
    assert shown.returncode == 0 and "legal" in shown.stdout and "fail" in shown.stdout

    view = cli_json(served.url, "finalize", pid, "approvals", "FAIL", "--note", "next quarter")
    assert view["status"] == "failed" and view["steps"][0]["finalized_by"] == "ops"
    assert task(view, "finance")["status"] == "canceled" and task(view, "announce")["status"] == "pending"
    entries = [(h["task"], h["from"], h["status"], h["by"]) for h in view["history"] if h["event"] == "task"]
    assert entries == [("legal", "pending", "waiting", "collector"), ("finance", "pending", "waiting", "collector"),
                       ("legal", "waiting", "fail", "ops"), ("finance", "waiting", "canceled", "ops")]
    assert view["history"][-1]["event"] == "process_failed"
    assert not [i for i in cli_json(served.url, "inbox")["items"] if i.get("process_id") == pid]
    listed = cli_json(served.url, "processes", "--status", "failed", token=READER)["processes"]
    assert [p["process_id"] for p in listed] == [pid]
    assert pid in cli(served.url, "processes", "--name", "go-live", token=READER).stdout


def test_a_failed_task_is_rerun_then_skipped_and_its_sibling_result_feeds_the_next_step(
    served: ServedApp, pool: PoolProcess
) -> None:
    status, view = as_admin(served, "POST", "/process/run", {"name": "etl", "steps": [
        {"name": "fetch", "tasks": [{"name": "pull", "platform_id": "demo", "settings": {"rows": 4}},
                                    {"name": "flaky", "platform_id": "demo", "settings": {"rows": 5, "fail_at": 2}}]},
        {"name": "check", "tasks": [{"name": "count", "platform_id": "demo",
                                     "settings": {"rows": {"$result": "pull.rows"}}}]}]})
    assert status == 201, view
    pid = view["process_id"]

    def get() -> dict:
        return as_admin(served, "GET", f"/process/get?process_id={pid}")[1]

    wait_for(lambda: get()["steps"][0]["status"] == "blocked", timeout_s=60, what="the step to block on flaky")
    view = cli_json(served.url, "rerun", pid, "flaky", "--note", "try once more")
    assert task(view, "flaky")["attempt"] == 2
    view = wait_for(lambda: (v := get())["steps"][0]["status"] == "blocked" and v, timeout_s=60,
                    what="the second attempt to fail too")
    attempts = task(view, "flaky")["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "fail"), (2, "fail")]
    assert attempts[0]["job_id"] != attempts[1]["job_id"]
    view = cli_json(served.url, "finalize", pid, "fetch", "OK", "--reason", "flaky is optional")
    assert task(view, "flaky")["status"] == "skipped" and view["steps"][0]["status"] == "passed"
    view = wait_for(lambda: (v := get())["status"] == "passed" and v, timeout_s=60, what="the process to pass")
    count = task(view, "count")
    assert count["result"] == {"rows": 4}, "rows came from pull's result"
    _, job = as_admin(served, "GET", f"/execution/get?job_id={count['job_id']}")
    assert job["settings"]["rows"] == 4 and job["process_id"] == pid


def test_the_inbox_shows_a_job_waiting_for_a_sign_in_with_what_it_expects(served: ServedApp, pool: PoolProcess) -> None:
    status, answer = as_admin(served, "POST", "/execution/run", {"platform_id": "signin", "settings": {}})
    assert status == 202, answer
    job_id = answer["job_id"]
    item = wait_for(lambda: next((i for i in cli_json(served.url, "inbox", token=READER)["items"]
                                  if i.get("job_id") == job_id), None), timeout_s=60, what="the job in the inbox")
    assert item["kind"] == "input" and item["name"] == "signin" and item["scope"] == "operate"
    assert item["prompt"] == "sign in at https://idp.invalid/authorize"
    assert item["expects"] == {"code": "the code the sign-in page shows"}
    assert item["action"] == f"POST /execution/resume?job_id={job_id}" and "resume_token" not in item
    human = cli(served.url, "inbox", token=READER)
    assert human.returncode == 0 and job_id in human.stdout and "sign in at" in human.stdout
    _, job = as_admin(served, "GET", f"/execution/get?job_id={job_id}")
    token = job["waiting"]["resume_token"]
    status, _ = served.request("POST", f"/execution/resume?job_id={job_id}",
                               {"token": token, "input": {"code": "abc-123-xyz"}},
                               headers={"Authorization": f"Bearer {OPS}"})
    assert status == 202
    wait_for(lambda: as_admin(served, "GET", f"/execution/get?job_id={job_id}")[1]["status"] == "finished",
             timeout_s=60, what="the resumed job to finish")
    assert not [i for i in cli_json(served.url, "inbox")["items"] if i.get("job_id") == job_id]
