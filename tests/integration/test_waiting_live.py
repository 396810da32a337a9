"""Jobs that wait for outside input, with real workers: an OAuth-style sign-in resumed by token, wrong and
reused tokens refused, a wait that times out."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import ROOT, PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import close, events, submit, view, wait_status

PACKAGE = "waitingplatforms"
SIGNIN = '''
"""Step one builds a sign-in URL; the job waits for the code the identity provider hands back; step two uses it."""
from pathlib import Path

from collector.platform import Platform


class Signin(Platform):
    """Writes a marker line per step run, so a test sees which steps ran on which attempt."""

    def __init__(self, marker_dir: str, timeout_s: float = 60.0) -> None:
        self.marker_dir, self.timeout_s = Path(marker_dir), timeout_s

    def _run(self, ctx):
        state = ctx.state or {}
        if "auth_url" not in state:
            with open(self.marker_dir / "step1", "a") as marker:
                marker.write(f"{ctx.attempt}\\n")
            state = {"auth_url": f"https://idp.invalid/authorize?state={ctx.job_id}"}
            ctx.checkpoint(state)
        answer = ctx.wait_for("signin", prompt=f"sign in at {state['auth_url']}", timeout_s=self.timeout_s)
        ctx.log.info(f"exchanging code {answer['code']} for a token")
        with open(self.marker_dir / "step2", "a") as marker:
            marker.write(f"{ctx.attempt} {len(answer['code'])}\\n")
        return {"signed_in": True, "code_chars": len(answer["code"]), "echo": answer["code"]}
'''
CODE = "oauth-code-7d1f0b9e4c2a"


@pytest.fixture
def served_kit(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServedApp]:
    import dataclasses

    target = tmp_path / PACKAGE
    shutil.copytree(ROOT / "platforms", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "signin.py").write_text(textwrap.dedent(SIGNIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    served = ServedApp(create_app(dataclasses.replace(config, platforms_package=PACKAGE)))
    yield served
    close(served)


@pytest.fixture
def pool(config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess]) -> PoolProcess:
    import dataclasses

    return start_pool(1, dataclasses.replace(config, platforms_package=PACKAGE), PYTHONPATH=str(tmp_path))


def resume(served: ServedApp, job_id: str, body: object) -> tuple[int, dict]:
    return served.request("POST", f"/execution/resume?job_id={job_id}", body)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_an_oauth_sign_in_waits_frees_its_worker_and_resumes_with_the_code(
    served_kit: ServedApp, pool: PoolProcess, tmp_path: Path, redis_client: redis.Redis
) -> None:
    job_id = submit(served_kit, "signin", {"marker_dir": str(tmp_path)})
    waiting = wait_status(served_kit, job_id, "waiting")
    wait = waiting["waiting"]
    assert wait["kind"] == "input" and wait["name"] == "signin"
    assert wait["prompt"] == f"sign in at https://idp.invalid/authorize?state={job_id}"
    token = wait["resume_token"]
    assert len(token) >= 40
    assert lines(tmp_path / "step1") == ["1"] and lines(tmp_path / "step2") == []
    # The worker is free: another job runs to its end on the pool's only worker meanwhile.
    other = submit(served_kit, "demo", {"rows": 3})
    assert wait_status(served_kit, other, "finished", "failed")["status"] == "finished"
    # Redis holds no token, only what derives it with the secret key.
    dump = b"".join(v for k in redis_client.keys("collector:job:*") if redis_client.type(k) == b"hash"
                    for v in redis_client.hgetall(k).values())
    assert token.encode() not in dump

    status, answer = resume(served_kit, job_id, {"token": token, "input": {"code": CODE}})
    assert status == 202 and answer == {"job_id": job_id, "status": "queued", "resumed": "signin",
                                        "resumed_by": "anonymous"}
    done = wait_status(served_kit, job_id, "finished", "failed")
    assert done["status"] == "finished", done.get("error")
    assert done["result"]["signed_in"] is True and done["result"]["code_chars"] == len(CODE)
    assert done["result"]["echo"] == "***", "the input is masked like a secret in the result"
    assert lines(tmp_path / "step1") == ["1"], "step one did not run again"
    assert lines(tmp_path / "step2") == [f"2 {len(CODE)}"]
    assert "waiting" not in done and done["attempt"] == 2
    kinds = [e["type"] for e in events(served_kit, job_id)]
    assert kinds.index("waiting") < kinds.index("resumed") < kinds.index("finished")
    # The code never shows: not in the answer, the events, the logs, nor in Redis in plain text.
    shown = str(view(served_kit, job_id)) + str(events(served_kit, job_id)) + pool.output()
    assert CODE not in shown
    everything = b"".join(
        b"".join(redis_client.hgetall(k).values()) if redis_client.type(k) == b"hash"
        else str(redis_client.xrange(k)).encode() if redis_client.type(k) == b"stream"
        else (redis_client.get(k) or b"") if redis_client.type(k) == b"string" else b""
        for k in redis_client.keys("*")
    )
    assert CODE.encode() not in everything


def test_a_wrong_token_and_a_reused_token_are_refused_and_change_nothing(
    served_kit: ServedApp, pool: PoolProcess, tmp_path: Path
) -> None:
    job_id = submit(served_kit, "signin", {"marker_dir": str(tmp_path)})
    token = wait_status(served_kit, job_id, "waiting")["waiting"]["resume_token"]
    before = view(served_kit, job_id)

    status, answer = resume(served_kit, job_id, {"token": "x" * 43, "input": {"code": CODE}})
    assert status == 403 and answer["error"] == "forbidden" and "does not resume" in answer["message"]
    assert view(served_kit, job_id) == before, "a wrong token changes nothing"

    status, answer = resume(served_kit, job_id, {"token": token, "input": {"code": CODE}})
    assert status == 202
    assert wait_status(served_kit, job_id, "finished", "failed")["status"] == "finished"
    status, answer = resume(served_kit, job_id, {"token": token, "input": {"code": "again"}})
    assert status == 409 and answer["details"]["token"] == ["already used"], "the job no longer waits"
    assert view(served_kit, job_id)["attempt"] == 2, "a reused token queues nothing"


def test_resume_answers_404_409_and_422_with_clear_errors(served_kit: ServedApp, tmp_path: Path) -> None:
    status, answer = resume(served_kit, "nosuchjob", {"token": "t" * 43, "input": {}})
    assert status == 404 and answer["error"] == "not_found"
    job_id = submit(served_kit, "demo", {"rows": 1})  # no pool: it stays queued
    status, answer = resume(served_kit, job_id, {"token": "t" * 43, "input": {}})
    assert status == 409 and "not waiting for input" in answer["message"]
    status, answer = resume(served_kit, job_id, {"token": 5, "input": [1], "extra": True})
    assert status == 422 and set(answer["details"]) == {"token", "input", "extra"}
    status, answer = served_kit.request("POST", f"/execution/resume?job_id={job_id}", raw=b"{not json")
    assert status == 400 and answer["error"] == "bad_request"
    status, answer = served_kit.request("POST", "/execution/resume", {"token": "t", "input": {}})
    assert status == 400 and "job_id" in answer["message"]


def test_a_wait_past_its_timeout_fails_the_job_with_that_cause(
    served_kit: ServedApp, pool: PoolProcess, tmp_path: Path
) -> None:
    job_id = submit(served_kit, "signin", {"marker_dir": str(tmp_path), "timeout_s": 1})
    token = wait_status(served_kit, job_id, "waiting")["waiting"]["resume_token"]
    failed = wait_status(served_kit, job_id, "failed", "finished", timeout_s=15)
    assert failed["status"] == "failed" and failed["error"]["type"] == "WaitTimeoutError"
    assert "no input for 'signin' arrived within timeout_s=1 s" in failed["error"]["message"]
    assert "sign in at https://idp.invalid" in failed["error"]["message"]
    status, _ = resume(served_kit, job_id, {"token": token, "input": {"code": CODE}})
    assert status == 409, "a timed-out job cannot be resumed"
    assert lines(tmp_path / "step2") == []


def test_canceling_a_waiting_job_ends_it_at_once(served_kit: ServedApp, pool: PoolProcess, tmp_path: Path) -> None:
    job_id = submit(served_kit, "signin", {"marker_dir": str(tmp_path)})
    token = wait_status(served_kit, job_id, "waiting")["waiting"]["resume_token"]
    status, answer = served_kit.request("POST", f"/execution/cancel?job_id={job_id}", {})
    assert status == 200 and answer["status"] == "canceled"
    status, _ = resume(served_kit, job_id, {"token": token, "input": {"code": CODE}})
    assert status == 409
    wait_for(lambda: view(served_kit, job_id)["status"] == "canceled", what="the job to stay canceled")
