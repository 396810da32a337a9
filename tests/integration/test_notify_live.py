"""Notifications with real workers: signed webhook deliveries to an operator's connection, retried after a 500,
sent when a job finishes, fails or waits for a person; a waiting job resumed by a GET callback link."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
import textwrap
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from collector.sealing import Sealer
from tests.conftest import ROOT, TEST_SECRET_KEY, PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import close, events, submit, view, wait_status
from tests.local_server import LocalServer, json_answer

PACKAGE = "notifyplatforms"
HOOK_SECRET = "hook-signing-secret-5e1c9a"
SIGNIN = '''
"""Waits for the code an identity provider hands back, then returns it."""
from collector.platform import Platform


class Signin(Platform):
    """One wait for input named `signin`."""

    def __init__(self, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s

    def _run(self, ctx):
        answer = ctx.wait_for("signin", prompt="sign in at https://idp.invalid/authorize", timeout_s=self.timeout_s)
        return {"code": answer["code"], "state": answer.get("state")}
'''
BOOM = '''
"""Fails for good."""
from collector.platform import FatalError, Platform


class Boom(Platform):
    """Raises FatalError at once."""

    def __init__(self, why: str = "the source says 401") -> None:
        self.why = why

    def _run(self, ctx):
        raise FatalError(self.why)
'''


@pytest.fixture
def receiver() -> Iterator[LocalServer]:
    with LocalServer.serving() as server:
        yield server


@pytest.fixture
def live(config: Config, tmp_path: Path, receiver: LocalServer, monkeypatch: pytest.MonkeyPatch) -> Config:
    target = tmp_path / PACKAGE
    shutil.copytree(ROOT / "platforms", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "signin.py").write_text(textwrap.dedent(SIGNIN))
    (target / "boom.py").write_text(textwrap.dedent(BOOM))
    monkeypatch.syspath_prepend(str(tmp_path))
    sealed = Sealer(TEST_SECRET_KEY).seal(HOOK_SECRET)
    path = tmp_path / "connections.toml"
    path.write_text(f"""
[ops-hook]
kind = "http"
base_url = "{receiver.base}/hook"
secret = {{sealed = "{sealed}"}}

[unsigned]
kind = "http"
base_url = "{receiver.base}/other"
""")
    return dataclasses.replace(config, connections=str(path), platforms_package=PACKAGE)


@pytest.fixture
def served(live: Config) -> Iterator[ServedApp]:
    app = ServedApp(create_app(live))
    yield app
    close(app)


@pytest.fixture
def pool(live: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess]) -> PoolProcess:
    return start_pool(1, live, PYTHONPATH=str(tmp_path))


def deliveries(receiver: LocalServer, event: str, job_id: str) -> list[Any]:
    return [seen for seen in receiver.requests if seen.path == "/hook" and json.loads(seen.body or b"{}").get(
        "job_id") == job_id and json.loads(seen.body)["event"] == event]


def verified(seen: Any) -> dict[str, Any]:
    """The body of a delivery whose signature checks out under the connection's secret."""
    expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), seen.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(seen.headers["x-collector-signature"], expected), seen.headers
    return json.loads(seen.body)


def notify_events(served: ServedApp, job_id: str) -> list[dict[str, Any]]:
    return [e for e in events(served, job_id) if e["type"] == "notify"]


def kept(redis_url: str) -> bytes:
    client = redis.Redis.from_url(redis_url)
    try:
        return b"".join(client.dump(key) or b"" for key in client.keys("*"))
    finally:
        client.close()


def test_a_finished_job_is_told_signed_and_retried_after_a_500(
    live: Config, served: ServedApp, pool: PoolProcess, receiver: LocalServer
) -> None:
    receiver.route("/hook", lambda seen, n: json_answer({"error": "busy"}, 500) if n == 0 else json_answer({}))
    job_id = submit(served, "demo", {"rows": 3}, notify=[{"connection": "ops-hook", "on": ["finished"]}])
    assert view(served, job_id)["notify"] == [{"connection": "ops-hook", "on": ["finished"]}]
    wait_status(served, job_id, "finished")
    told = wait_for(lambda: [e for e in notify_events(served, job_id) if e["outcome"] == "delivered"],
                    timeout_s=30, what="the delivery after the retry")
    tries = notify_events(served, job_id)
    assert [e["outcome"] for e in tries] == ["retrying", "delivered"], tries
    assert "HTTP 500" in tries[0]["error"] and tries[0]["attempt"] == 1 and told[0]["attempt"] == 2
    first, second = deliveries(receiver, "finished", job_id)
    assert first.body == second.body  # the same delivery, tried again
    body = verified(second)
    assert body["status"] == "finished" and body["platform_id"] == "demo" and body["result"]
    assert second.headers["x-collector-event"] == "finished" and second.headers["content-type"] == "application/json"
    assert HOOK_SECRET.encode() not in kept(live.redis_url or "")
    assert HOOK_SECRET not in pool.output()
    for path in ("/platforms/get", f"/execution/get?job_id={job_id}", f"/execution/events?job_id={job_id}"):
        assert HOOK_SECRET not in json.dumps(served.request("GET", path)[1]), path


def test_a_failed_job_is_told_with_its_error(served: ServedApp, pool: PoolProcess, receiver: LocalServer) -> None:
    receiver.route("/hook", lambda seen, n: json_answer({}))
    job_id = submit(served, "boom", {"why": "bad credentials"},
                    notify=[{"connection": "ops-hook", "on": ["failed", "waiting"]}])
    wait_status(served, job_id, "failed")
    (seen,) = wait_for(lambda: deliveries(receiver, "failed", job_id), timeout_s=30, what="the failed notification")
    body = verified(seen)
    assert body["error"]["type"] == "FatalError" and "bad credentials" in body["error"]["message"]
    assert wait_for(lambda: notify_events(served, job_id), what="the delivery event")[0]["outcome"] == "delivered"


def test_a_waiting_job_is_told_and_resumed_by_its_get_callback(
    served: ServedApp, pool: PoolProcess, receiver: LocalServer
) -> None:
    receiver.route("/hook", lambda seen, n: json_answer({}))
    job_id = submit(served, "signin", {}, notify=[{"connection": "ops-hook"}])
    waiting = wait_status(served, job_id, "waiting")["waiting"]
    (seen,) = wait_for(lambda: deliveries(receiver, "waiting", job_id), timeout_s=30, what="the waiting notification")
    body = verified(seen)
    assert body["waiting"]["name"] == "signin" and "sign in at" in body["waiting"]["prompt"]
    assert body["callback"] == waiting["callback"]  # the same link GET /execution/get shows

    status, refused = served.request("GET", "/execution/callback?token=" + job_id + ".forged&code=x")
    assert status == 403 and view(served, job_id)["status"] == "waiting", refused
    # An identity provider's redirect: a browser GET with the code in the query, no API token.
    request = urllib.request.Request(f"{served.url}{body['callback']}&code=4%2F0AX4&state=xyz",
                                     headers={"Accept": "text/html"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202 and "queued again" in answer.read().decode()
    ended = wait_status(served, job_id, "finished", timeout_s=30)
    assert ended["result"] == {"code": "***", "state": "xyz"}, ended["result"]  # inputs are masked like secrets
    status, again = served.request("GET", body["callback"] + "&code=again")
    assert status in (403, 409) and again["error"] in ("forbidden", "conflict"), again
    finished = wait_for(lambda: deliveries(receiver, "finished", job_id), timeout_s=30)
    assert verified(finished[0])["status"] == "finished"


def test_unknown_or_unsigned_targets_are_refused_at_submit(served: ServedApp, redis_client: redis.Redis) -> None:
    for notify, path in (
        ([{"connection": "nope"}], "notify.0.connection"),
        ([{"connection": "ops-hook"}, {"connection": "unsigned"}], "notify.1.connection"),
        ([{"connection": "ops-hook", "on": ["exploded"]}], "notify.0.on"),
        ([{"connection": "ops-hook", "url": "http://x"}], "notify.0.url"),
        ({"connection": "ops-hook"}, "notify"),
    ):
        status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {},
                                                                 "notify": notify})
        assert status == 422 and path in body["details"], (notify, body)
    status, body = served.request("POST", "/schedules", {"interval_s": 3600, "spec": {"platform_id": "demo"},
                                                         "notify": [{"connection": "nope"}]})
    assert status == 422 and "notify.0.connection" in body["details"], body
    assert redis_client.llen("rq:queue:collector") == 0


def test_a_process_tells_its_step_changes_the_sign_off_it_waits_for_and_its_end(
    served: ServedApp, pool: PoolProcess, receiver: LocalServer
) -> None:
    receiver.route("/hook", lambda seen, n: json_answer({}))
    status, view = served.request("POST", "/process/run", {
        "name": "release", "notify": [{"connection": "ops-hook"}],
        "steps": [{"name": "collect", "tasks": [
                      {"name": "pull", "platform_id": "demo", "settings": {"rows": 2}},
                      {"name": "review", "manual": True, "prompt": "check the counts"}]},
                  {"name": "publish", "tasks": [{"name": "push", "platform_id": "demo", "settings": {"rows": 1}}]}],
    })
    assert status == 201, view
    pid = view["process_id"]

    def told() -> list[dict[str, Any]]:
        return [verified(seen) for seen in receiver.requests if seen.path == "/hook"
                and json.loads(seen.body).get("process_id") == pid]

    (waiting,) = wait_for(lambda: [b for b in told() if b["event"] == "waiting"], timeout_s=30,
                          what="the sign-off notification")
    assert waiting["task"] == "review" and waiting["prompt"] == "check the counts" and waiting["step"] == "collect"
    wait_for(lambda: served.request("GET", f"/process/get?process_id={pid}")[1]["steps"][0]["tasks"][0]["status"]
             == "ok", timeout_s=30, what="the pull to finish")
    status, _ = served.request("POST", f"/process/ack?process_id={pid}&task=review", {"result": "OK"})
    assert status == 200
    wait_for(lambda: any(b["event"] == "finished" for b in told()), timeout_s=30, what="the process's end")
    steps = [(b["step"], b["step_status"]) for b in told() if b["event"] == "step"]
    assert steps == [("collect", "running"), ("collect", "passed"), ("publish", "running"), ("publish", "passed")]

    def tries() -> list[dict[str, Any]]:
        return [h for h in served.request("GET", f"/process/get?process_id={pid}")[1]["history"]
                if h["event"] == "notify"]

    history = wait_for(lambda: len(tries()) >= 6 and tries(), what="the 6 tries in the history")
    assert all(h["outcome"] == "delivered" and h["connection"] == "ops-hook" for h in history), history
    assert sorted(h["notification"] for h in history) == ["finished", "step", "step", "step", "step", "waiting"]
    status, body = served.request("POST", "/process/run", {"name": "bad", "notify": [{"connection": "ops-hook",
                                  "on": ["exploded"]}], "steps": [{"name": "s", "tasks": [{"name": "m",
                                  "manual": True}]}]})
    assert status == 422 and "notify.0.on" in body["details"], body
