"""Retry by hand, rq-dashboard's Requeue and Delete, and the events a job and its platform leave, with real
worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import ROOT, PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import (
    close,
    events,
    make_package,
    submit,
    view,
    wait_status,
    with_package,
)

XHR = {"X-Requested-With": "XMLHttpRequest"}

# A seed-style ETL: three checkpointed steps; step 2 needs a sign-in that fails for good (FatalError) while the
# file `broken` is in its marker folder.
BREAKER = '''
"""Three checkpointed steps; step 2 fails with a FatalError while MARKERS/broken exists."""
from pathlib import Path

from collector.platform import FatalError, Platform, Secret


class Breaker(Platform):
    """Writes a marker line per step run; step 2 raises FatalError while `broken` exists; reports its own events."""

    def __init__(self, marker_dir: str, api_key: Secret = "", sign_in: bool = False) -> None:
        self.marker_dir, self.api_key, self.sign_in = Path(marker_dir), api_key, sign_in

    def _run(self, ctx):
        state = ctx.state or {"done": 0}
        for step in (1, 2, 3):
            if state["done"] >= step:
                continue
            if step == 2 and self.sign_in:
                ctx.wait_for("signin", prompt="the code the identity provider sent", timeout_s=120)
            with open(self.marker_dir / f"step{step}", "a") as marker:
                marker.write(f"{ctx.attempt}\\n")
            if step == 2 and (self.marker_dir / "broken").exists():
                raise FatalError("sign-in refused: the session expired; sign in again, then retry the job")
            ctx.event("step_done", step=step, rows=10 * step)
            ctx.log.warning("step %d done", step)
            state = {"done": step}
            ctx.checkpoint(state)
        return {"steps": 3, "attempt": ctx.attempt, "signed_in": "signin" in ctx.inputs}
'''


@pytest.fixture
def kit(config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServedApp, Path]]:
    package = make_package(tmp_path)
    (package / "breaker.py").write_text(textwrap.dedent(BREAKER))
    monkeypatch.syspath_prepend(str(tmp_path))
    kit_config = with_package(config)
    served = ServedApp(create_app(kit_config))
    start_pool(1, kit_config, PYTHONPATH=str(tmp_path))
    markers = tmp_path / "markers"
    markers.mkdir()
    yield served, markers
    close(served)


def test_a_breaker_job_failed_for_good_is_retried_by_hand_and_its_finished_steps_do_not_run_again(
    kit: tuple[ServedApp, Path], redis_client: redis.Redis
) -> None:
    served, markers = kit
    (markers / "broken").touch()
    job_id = submit(served, "breaker", {"marker_dir": str(markers)}, retry={"max": 2, "backoff": 0})
    failed = wait_status(served, job_id, "failed", "finished", timeout_s=30)
    assert failed["status"] == "failed" and failed["error"]["type"] == "FatalError" and failed["attempt"] == 1
    assert failed["checkpoint"] == {"done": 1}
    assert redis_client.ttl(f"collector:job:{job_id}") > 0, "an ended record expires"

    (markers / "broken").unlink()  # the operator signed in again
    status, answer = served.request("POST", f"/execution/retry?job_id={job_id}", headers=XHR)
    assert status == 202, answer
    assert answer == {"job_id": job_id, "status": "queued", "previous": "failed", "retried_by": "anonymous",
                      "retries_by_hand": 1, "from_checkpoint": True}
    done = wait_status(served, job_id, "finished", "failed", timeout_s=30)
    assert done["status"] == "finished", done.get("error")
    assert done["result"] == {"steps": 3, "attempt": 2, "signed_in": False} and done["attempt"] == 2
    assert "error" not in done and done["retried_by"] == "anonymous"
    assert (markers / "step1").read_text() == "1\n", "step 1 finished on the first attempt and did not run again"
    assert (markers / "step2").read_text() == "1\n2\n"
    assert (markers / "step3").read_text() == "2\n"
    kinds = [e["type"] for e in events(served, job_id)]
    assert kinds.count("failed") == 1 and kinds.count("retried") == 1 and kinds[-1] == "finished"
    assert kinds.index("failed") < kinds.index("retried") < kinds.index("finished")
    assert redis_client.zscore("rq:failed:collector", job_id) is None

    # Only an ended job can be retried; a finished one is submitted again instead.
    status, answer = served.request("POST", f"/execution/retry?job_id={job_id}", headers=XHR)
    assert status == 409 and answer["error"] == "conflict" and "'finished'" in answer["message"]
    status, answer = served.request("POST", "/execution/retry?job_id=no-such-job", headers=XHR)
    assert status == 404


def test_the_events_carry_settings_log_lines_the_platforms_own_and_the_result(kit: tuple[ServedApp, Path]) -> None:
    served, markers = kit
    job_id = submit(served, "breaker", {"marker_dir": str(markers), "api_key": "k3y-very-secret"})
    assert wait_status(served, job_id, "finished", "failed", timeout_s=30)["status"] == "finished"
    found = events(served, job_id)
    assert "k3y-very-secret" not in str(found)
    queued = found[0]
    assert queued["type"] == "queued" and queued["settings"]["marker_dir"] == str(markers)
    own = [e for e in found if e["type"] == "step_done"]
    assert [(e["step"], e["rows"], e["origin"]) for e in own] == [(1, 10, "platform"), (2, 20, "platform"),
                                                                  (3, 30, "platform")]
    logged = [e for e in found if e["type"] == "log"]
    assert [e["level"] for e in logged] == ["WARNING"] * 3 and "step 1 done" in logged[0]["message"]
    assert found[-1]["type"] == "finished" and found[-1]["result"] == {"steps": 3, "attempt": 1, "signed_in": False}


def test_the_dashboards_requeue_retries_by_hand_and_its_delete_cancels_a_running_job(
    kit: tuple[ServedApp, Path], redis_client: redis.Redis
) -> None:
    served, markers = kit
    (markers / "broken").touch()
    job_id = submit(served, "breaker", {"marker_dir": str(markers)})
    assert wait_status(served, job_id, "failed", timeout_s=30)["checkpoint"] == {"done": 1}
    (markers / "broken").unlink()
    status, answer = served.request("POST", f"/rq/job/{job_id}/requeue", headers=XHR)
    assert status == 200 and answer["status"] == "OK" and answer["previous"] == "failed", answer
    assert wait_status(served, job_id, "finished", "failed", timeout_s=30)["status"] == "finished"
    assert (markers / "step1").read_text() == "1\n"

    sleeper = submit(served, "sleeper", {"seconds": 60, "polite": True})
    wait_status(served, sleeper, "started", timeout_s=30)
    status, answer = served.request("POST", f"/rq/job/{sleeper}/delete", headers=XHR)
    assert status == 200 and answer["status"] == "OK", answer
    stopped = wait_status(served, sleeper, "stopped", "finished", timeout_s=30)
    assert stopped["status"] == "stopped" and stopped["cancel_reason"] == "deleted in the dashboard"
    status, answer = served.request("POST", f"/rq/job/{sleeper}/requeue", headers=XHR)
    assert status == 200 and answer["previous"] == "stopped", answer
    wait_for(lambda: view(served, sleeper)["status"] == "started", timeout_s=30, what="the stopped job to run again")
    assert "cancel_requested_at" not in view(served, sleeper), "the old cancel does not stop the new attempt"
    served.request("POST", f"/execution/cancel?job_id={sleeper}", headers=XHR)
    wait_status(served, sleeper, "stopped", timeout_s=30)


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "COLLECTOR_URL": url}, timeout=120)


def test_the_cli_resumes_a_waiting_job_retries_it_by_hand_and_follows_its_events(kit: tuple[ServedApp, Path]) -> None:
    served, markers = kit
    (markers / "broken").touch()
    job_id = submit(served, "breaker", {"marker_dir": str(markers), "sign_in": True})
    waiting = wait_status(served, job_id, "waiting", "failed", timeout_s=30)
    assert waiting["status"] == "waiting" and waiting["waiting"]["name"] == "signin"

    resumed = cli(served.url, "resume", job_id, "--set", "code=123456", "--json")  # the token: read from the job
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed"] == "signin"
    again = cli(served.url, "resume", job_id, "--set", "code=123456")
    assert again.returncode == 2 and "not waiting for input" in again.stderr
    assert wait_status(served, job_id, "failed", timeout_s=30)["error"]["type"] == "FatalError"

    refused = cli(served.url, "events", "no-such-job")
    assert refused.returncode == 2 and "not_found" in refused.stderr
    (markers / "broken").unlink()
    retried = cli(served.url, "retry", job_id)
    assert retried.returncode == 0, retried.stderr
    assert f"job {job_id} queued again (it was failed) from its last checkpoint" in retried.stdout
    followed = cli(served.url, "events", job_id, "--follow", "--json")
    assert followed.returncode == 0, followed.stderr
    lines = [json.loads(text) for text in followed.stdout.splitlines()]
    kinds = [e["type"] for e in lines]
    assert kinds[0] == "queued" and kinds[-1] == "finished" and "retried" in kinds and "resumed" in kinds
    assert len({e["id"] for e in lines}) == len(lines), "no event printed twice"
    assert lines[-1]["result"] == {"steps": 3, "attempt": 3, "signed_in": True}
    assert (markers / "step1").read_text() == "1\n"
    shown = cli(served.url, "events", job_id)
    assert shown.returncode == 0 and "retried" in shown.stdout
    assert f"WARNING [breaker {job_id}] step 1 done" in shown.stdout
    assert cli(served.url, "retry", job_id).returncode == 2
