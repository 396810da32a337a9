"""Retries, checkpoints, worker deaths, cancel, timeouts and shutdown, with real worker processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import close, events, make_package, submit, view, wait_status, with_package

XHR = {"X-Requested-With": "XMLHttpRequest"}  # what a POST without a JSON body carries to show it is no form


class Kit:
    """The API and pools running the test platforms."""

    def __init__(self, config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess]) -> None:
        self.config, self.tmp_path, self._start_pool = config, tmp_path, start_pool
        self.served = ServedApp(create_app(config))

    def pool(self, size: int = 1, **changes: Any) -> PoolProcess:
        import dataclasses

        env = {f"COLLECTOR_{name.upper()}": str(value) for name, value in changes.items()}
        return self._start_pool(size, dataclasses.replace(self.config, **changes), PYTHONPATH=str(self.tmp_path),
                                **env)


@pytest.fixture
def kit(config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    make_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    kit = Kit(with_package(config), tmp_path, start_pool)
    yield kit
    close(kit.served)


def kinds(served: ServedApp, job_id: str) -> list[str]:
    return [e["type"] for e in events(served, job_id)]


def test_transient_errors_are_retried_with_exponential_backoff_then_the_job_finishes(
    kit: Kit, redis_client: redis.Redis
) -> None:
    kit.pool(1)
    job_id = submit(kit.served, "flaky", {"failures": 2}, retry={"max": 3, "backoff": 0.4, "jitter": 0})
    scheduled = wait_status(kit.served, job_id, "scheduled")
    assert scheduled["attempt"] == 1 and scheduled["max_attempts"] == 4 and scheduled["retry_at"]
    assert scheduled["error"]["type"] == "TransientError"
    assert redis_client.zscore("rq:scheduled:collector", job_id) is not None, "waits in RQ's scheduled registry"
    done = wait_status(kit.served, job_id, "finished", "failed")
    assert done["status"] == "finished" and done["result"] == {"attempt": 3} and done["attempt"] == 3
    log = events(kit.served, job_id)
    retries = [e for e in log if e["type"] == "retry_scheduled"]
    assert [r["delay_s"] for r in retries] == [0.4, 0.8], "exponential backoff"
    types = [e["type"] for e in log]
    assert types.count("started") == 3
    assert types[0] == "queued" and types[-1] == "finished"
    ids = [e["id"] for e in log]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-"))), "events come in order"
    assert 0 < redis_client.ttl(f"rq:job:{job_id}") <= kit.config.record_ttl_s, "RQ's result TTL survives retries"
    assert 0 < redis_client.ttl(f"collector:job:{job_id}:events:list") <= kit.config.record_ttl_s


def test_fatal_errors_are_not_retried_and_retries_run_out(kit: Kit) -> None:
    kit.pool(1)
    fatal = submit(kit.served, "flaky", {"fatal": True}, retry={"max": 3, "backoff": 0})
    exhausted = submit(kit.served, "flaky", {"failures": 9}, retry={"max": 1, "backoff": 0.1})
    record = wait_status(kit.served, fatal, "failed")
    assert record["attempt"] == 1 and record["error"]["type"] == "FatalError"
    record = wait_status(kit.served, exhausted, "failed")
    assert record["attempt"] == 2 and record["error"]["type"] == "TransientError"
    assert "attempt 2" in record["error"]["message"]


def test_a_three_step_job_killed_twice_in_step_two_resumes_from_its_checkpoint(kit: Kit) -> None:
    kit.pool(2)
    markers = kit.tmp_path / "markers"
    markers.mkdir()
    job_id = submit(kit.served, "steps", {"marker_dir": str(markers), "crashes": 2},
                    retry={"max": 2, "backoff": 0.1, "jitter": 0})
    record = wait_status(kit.served, job_id, "finished", "failed", timeout_s=30)
    assert record["status"] == "finished", record
    assert record["attempt"] == 3 and record["deaths"] == 2 and record["result"] == {"steps": 3, "attempt": 3}
    assert (markers / "step1").read_text() == "1\n", "step 1 ran exactly once"
    assert (markers / "step2").read_text() == "1\n2\n3\n"
    assert (markers / "step3").read_text() == "3\n"
    assert record["checkpoint"] == {"done": 3}
    found = kinds(kit.served, job_id)
    assert found.count("worker_lost") == 2 and found.count("retry_scheduled") == 2
    assert found.count("checkpoint") == 3


def test_a_job_whose_worker_keeps_dying_fails_for_good_after_three_deaths(kit: Kit) -> None:
    pool = kit.pool(1)
    markers = kit.tmp_path / "markers"
    markers.mkdir()
    job_id = submit(kit.served, "steps", {"marker_dir": str(markers), "crashes": 99},
                    retry={"max": 10, "backoff": 0.05, "jitter": 0})
    record = wait_status(kit.served, job_id, "failed", "finished", timeout_s=30)
    assert record["status"] == "failed" and record["deaths"] == 3 and record["attempt"] == 3
    assert record["error"]["type"] == "WorkerDiedError"
    assert "died 3 times, so it is not retried again" in record["error"]["message"]
    assert "signal 9" in record["error"]["message"]
    after = submit(kit.served, "flaky", {"failures": 0})
    assert wait_status(kit.served, after, "finished")["status"] == "finished"
    assert pool.process.poll() is None


def test_a_killed_child_with_retries_left_is_retried_at_once(kit: Kit, redis_client: redis.Redis) -> None:
    kit.pool(1)
    job_id = submit(kit.served, "sleeper", {"seconds": 30}, retry={"max": 1, "backoff": 0.2, "jitter": 0})
    record = wait_status(kit.served, job_id, "started")
    pid = int(redis_client.hget(f"rq:worker:{record['worker']}", "pid"))
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: view(kit.served, job_id)["status"] != "started", timeout_s=5, what="the death to be seen")
    assert time.monotonic() - killed < 2.0
    again = wait_for(lambda: (r := view(kit.served, job_id))["attempt"] == 2 and r["status"] == "started" and r,
                     what="the retry to start")
    assert again["deaths"] == 1 and again["worker"] != record["worker"]


def test_a_queued_job_cancelled_never_runs_and_a_second_cancel_conflicts(kit: Kit, redis_client: redis.Redis) -> None:
    job_id = submit(kit.served, "flaky", {"failures": 0})
    status, body = kit.served.request("POST", f"/execution/cancel?job_id={job_id}", {"reason": "not needed"})
    assert status == 200 and body["status"] == "canceled" and body["canceled_by"] == "anonymous", body
    kit.pool(1)
    other = submit(kit.served, "flaky", {"failures": 0})
    wait_status(kit.served, other, "finished")
    record = view(kit.served, job_id)
    assert record["status"] == "canceled" and record["attempt"] == 0 and "started_at" not in record
    assert record["canceled_by"] == "anonymous" and record["cancel_reason"] == "not needed" and record["canceled_at"]
    assert redis_client.hget(f"rq:job:{job_id}", "status") == b"canceled"
    assert kinds(kit.served, job_id) == ["queued", "canceled"]
    status, body = kit.served.request("POST", f"/execution/cancel?job_id={job_id}", headers=XHR)
    assert status == 409 and body["error"] == "conflict" and "already ended as 'canceled'" in body["message"]
    status, body = kit.served.request("POST", "/execution/cancel?job_id=nope", headers=XHR)
    assert status == 404


@pytest.mark.parametrize("polite", [False, True], ids=["progress-raises", "checks-ctx-cancelled"])
def test_a_running_job_cancelled_stops_at_once(kit: Kit, polite: bool) -> None:
    pool = kit.pool(1)
    job_id = submit(kit.served, "sleeper", {"seconds": 60, "polite": polite})
    wait_status(kit.served, job_id, "started")
    status, body = kit.served.request("POST", f"/execution/cancel?job_id={job_id}&reason=bob", headers=XHR)
    assert status == 202 and body["status"] == "started" and body["canceled_by"] == "anonymous", body
    asked = time.monotonic()
    record = wait_status(kit.served, job_id, "stopped", timeout_s=5)
    assert time.monotonic() - asked < 3.0, "stopped well within the grace period"
    assert record["canceled_by"] == "anonymous" and record["cancel_reason"] == "bob"
    assert record["canceled_at"] and record["ended_at"]
    if polite:
        assert record["result"]["interrupted_at"] > 0, "the platform saw ctx.cancelled and returned"
    else:
        assert record["error"]["type"] == "JobCancelledError" and "anonymous" in record["error"]["message"]
    assert kinds(kit.served, job_id)[-2:] == ["cancel_requested", "stopped"]
    status, _ = kit.served.request("POST", f"/execution/cancel?job_id={job_id}", headers=XHR)
    assert status == 409
    after = submit(kit.served, "flaky", {"failures": 0})
    wait_status(kit.served, after, "finished")
    assert pool.process.poll() is None


def test_a_running_job_that_ignores_its_cancel_is_killed_after_the_grace_period(kit: Kit) -> None:
    pool = kit.pool(1, cancel_grace_s=1.0)
    job_id = submit(kit.served, "sleeper", {"seconds": 60, "stubborn": True})
    first = wait_status(kit.served, job_id, "started")
    assert kit.served.request("POST", f"/execution/cancel?job_id={job_id}", headers=XHR)[0] == 202
    record = wait_status(kit.served, job_id, "stopped", timeout_s=8)
    assert record["error"]["type"] == "JobCancelledError"
    assert "did not stop within 1 s" in record["error"]["message"]
    wait_for(lambda: (n := pool.worker_names()) and first["worker"] not in n, what="a replacement worker")
    after = submit(kit.served, "flaky", {"failures": 0})
    wait_status(kit.served, after, "finished")


def test_a_job_over_its_timeout_fails_and_the_worker_is_whole_again(kit: Kit) -> None:
    pool = kit.pool(1)
    job_id = submit(kit.served, "sleeper", {"seconds": 30}, timeout_s=1)
    record = wait_status(kit.served, job_id, "failed", timeout_s=10)
    assert record["error"]["type"] == "JobTimeoutError"
    assert "longer than its timeout of 1 s" in record["error"]["message"]
    assert record["attempt"] == 1, "a timeout is not retried"
    worker = record["worker"]
    after = submit(kit.served, "flaky", {"failures": 0})
    assert wait_status(kit.served, after, "finished")["worker"] == worker, "the same worker goes on"
    assert pool.process.poll() is None


def test_a_platforms_timeout_constant_applies_and_a_spec_timeout_wins_over_it(kit: Kit) -> None:
    kit.pool(1)
    short = submit(kit.served, "slowpoke", {"seconds": 30})
    record = wait_status(kit.served, short, "failed", timeout_s=10)
    assert record["error"]["type"] == "JobTimeoutError" and "timeout of 1 s" in record["error"]["message"]
    longer = submit(kit.served, "slowpoke", {"seconds": 1.5}, timeout_s=5)
    assert wait_status(kit.served, longer, "finished", "failed", timeout_s=15)["result"] == {"slept": 1.5}


def test_a_job_that_swallows_its_timeout_is_killed_past_the_grace(kit: Kit) -> None:
    kit.pool(1)
    job_id = submit(kit.served, "sleeper", {"seconds": 60, "stubborn": True}, timeout_s=1)
    record = wait_status(kit.served, job_id, "failed", timeout_s=15)
    assert record["error"]["type"] == "JobTimeoutError" and "its worker was killed" in record["error"]["message"]
    after = submit(kit.served, "flaky", {"failures": 0})
    wait_status(kit.served, after, "finished")


def test_sigterm_past_the_grace_requeues_the_running_job_and_another_pool_finishes_it(kit: Kit) -> None:
    pool = kit.pool(1, shutdown_grace_s=1.0)
    job_id = submit(kit.served, "sleeper", {"seconds": 4})
    wait_status(kit.served, job_id, "started")
    pool.process.send_signal(signal.SIGTERM)
    assert pool.process.wait(15) == 0
    record = view(kit.served, job_id)
    assert record["status"] == "queued", "requeued, not lost and not failed"
    assert kinds(kit.served, job_id)[-1] == "requeued"
    kit.pool(1)
    done = wait_status(kit.served, job_id, "finished", timeout_s=20)
    assert done["attempt"] == 2 and done["result"] == {"slept": 4}
    found = kinds(kit.served, job_id)
    # the first run was over (its worker dead) before the second started: never two at once
    assert found.index("requeued") < len(found) - 1 - found[::-1].index("started")
