"""Retry policies, checkpoints, cancel, events and recovery decisions, on fakeredis without processes."""

from __future__ import annotations

import logging
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector.config import Config
from collector.errors import JobCancelledError, JobFailedError
from collector.run.context import RunContext
from collector.run.runner import Runtime, execute
from collector.specs.policy import RetryPolicy
from collector.specs.registry import Registry
from collector.store.records import JobStore, run_watched
from collector.submit.submitter import Submitter
from collector.workflows.recovery import decide, enqueue_due, recover

XHR = {"X-Requested-With": "XMLHttpRequest"}  # what a POST without a JSON body carries to show it is no form


def run(client: FlaskClient, body: object) -> tuple[int, dict]:
    response = client.post("/execution/run", json=body)
    return response.status_code, response.get_json()


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"retry": {"max": -1}}, "retry.max", "from 0 to 25"),
        ({"retry": {"max": True}}, "retry.max", "whole number"),
        ({"retry": {"max": 2, "backoff": "soon"}}, "retry.backoff", "seconds as a number"),
        ({"retry": {"jitter": 2}}, "retry.jitter", "fraction"),
        ({"retry": {"backoff": 10, "cap": 1}}, "retry.cap", "must not be below the backoff"),
        ({"retry": {"tries": 3}}, "retry.tries", "Unknown field"),
        ({"retry": 3}, "retry", "as an object"),
        ({"timeout_s": 0}, "timeout_s", "whole seconds"),
        ({"timeout_s": "1h"}, "timeout_s", "whole seconds"),
    ],
)
def test_bad_retry_and_timeout_fields_are_422_at_their_path_and_write_nothing(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, extra: dict, field: str, words: str
) -> None:
    status, body = run(client, {"platform_id": "demo", "settings": {}, **extra})
    assert status == 422 and body["error"] == "validation_error"
    assert list(body["details"]) == [field] and words in body["details"][field][0]
    assert fake_redis.dbsize() == 0


def test_a_spec_with_retry_and_timeout_is_stored_with_the_defaults_filled_in(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    status, body = run(client, {"platform_id": "demo", "settings": {}, "retry": {"max": 4}, "timeout_s": 90})
    assert status == 202
    record = JobStore(fake_redis, unit_config).read(body["job_id"])
    assert record["max_attempts"] == 5 and record["timeout_s"] == 90
    assert record["retry"] == {"max": 4, "backoff": unit_config.retry_backoff_s, "cap": unit_config.retry_backoff_cap_s,
                               "jitter": unit_config.retry_jitter}
    assert fake_redis.hget(f"rq:job:{body['job_id']}", "timeout") == b"90"


def test_backoff_is_exponential_capped_and_jitter_only_shortens_it() -> None:
    policy = RetryPolicy(max=5, backoff=1.0, cap=5.0, jitter=0.5)
    assert [policy.delay(n, rand=0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(2, rand=1.0) == 1.0
    assert all(0.5 <= policy.delay(1) <= 1.0 for _ in range(50))


def test_recovery_decisions(unit_config: Config) -> None:
    started = {"status": "started", "attempt": 1, "max_attempts": 3, "retry": {"max": 2, "backoff": 1, "jitter": 0}}
    status, fields, delay = decide("died", started, unit_config, "killed")
    assert (status, fields["deaths"], delay) == ("scheduled", 1, 1.0)
    assert decide("died", {**started, "attempt": 3}, unit_config, "killed")[0] == "failed"
    status, fields, _ = decide("died", {**started, "deaths": 2}, unit_config, "killed")
    assert status == "failed" and "died 3 times" in fields["error"]["message"]
    assert decide("died", {**started, "cancel_requested_at": "x"}, unit_config, "killed")[0] == "stopped"
    assert decide("timeout", started, unit_config, "late")[1]["error"]["type"] == "JobTimeoutError"
    assert decide("shutdown", started, unit_config, "bye")[0] == "queued"
    assert decide("died", {**started, "status": "queued"}, unit_config, "killed")[0] == "queued"


def submit(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry, body: dict) -> str:
    return Submitter(connection=fake_redis, config=config, registry=registry).submit(body)["job_id"]


def test_a_transient_failure_is_scheduled_and_requeued_when_due(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    from unittest import mock

    from collector.errors import TransientError

    job_id = submit(fake_redis, unit_config, registry,
                    {"platform_id": "demo", "settings": {"rows": 2}, "retry": {"max": 1, "backoff": 0, "jitter": 0}})
    runtime = Runtime(unit_config, fake_redis, registry)
    demo = registry.get("demo")
    assert demo is not None
    with mock.patch.object(demo.cls, "_run", side_effect=TransientError("503")), pytest.raises(JobFailedError):
        execute(job_id, runtime)
    store = JobStore(fake_redis, unit_config)
    assert store.read(job_id, "status")["status"] == "scheduled" and runtime.outcome is not None
    assert runtime.outcome.status == "scheduled"
    # Not the TTL of an ended record: the safety net of an open one, renewed by the retry.
    assert unit_config.record_ttl_s < fake_redis.ttl(store.keys.job(job_id)) <= unit_config.open_record_ttl_s
    assert fake_redis.hget(f"rq:job:{job_id}", "status") == b"scheduled"
    assert enqueue_due(fake_redis, unit_config) == 1
    assert store.read(job_id, "status")["status"] == "queued"
    assert fake_redis.hget(f"rq:job:{job_id}", "status") == b"queued"
    assert fake_redis.lrange("rq:queue:collector", 0, -1).count(job_id.encode()) == 2  # the original push remains
    assert enqueue_due(fake_redis, unit_config) == 0, "moved once"
    assert execute(job_id, runtime) == {"rows": 2}
    assert [e["type"] for e in store.events(job_id)] == [
        "queued", "started", "retry_scheduled", "requeued", "started", "finished"]


def test_a_checkpoint_is_stored_at_once_and_given_to_the_next_attempt(
    fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    store = JobStore(fake_redis, unit_config)
    ctx = RunContext(job_id="j", platform_id="demo", attempt=1, store=store, interval_s=10.0)
    ctx.checkpoint({"page": 7, "cursor": "abc"})
    assert store.read("j", "checkpoint")["checkpoint"] == {"page": 7, "cursor": "abc"}
    assert ctx.state == {"page": 7, "cursor": "abc"}
    assert store.events("j")[0]["type"] == "checkpoint"
    with pytest.raises(ValueError, match="JSON-able"):
        ctx.checkpoint({"when": object()})
    with pytest.raises(ValueError, match="bytes, over"):
        ctx.checkpoint("x" * 70_000)


def test_progress_raises_once_the_job_is_cancelled(fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    ctx = RunContext(job_id="j", platform_id="demo", attempt=1, store=JobStore(fake_redis, unit_config),
                     interval_s=10.0)
    ctx.progress(1, 10)
    assert ctx.cancelled is False
    ctx.cancel()
    assert ctx.cancelled is True
    with pytest.raises(JobCancelledError):
        ctx.progress(2, 10)


def test_cancel_through_the_api(client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    _, body = run(client, {"platform_id": "demo", "settings": {}})
    job_id = body["job_id"]
    response = client.post(f"/execution/cancel?job_id={job_id}", json={"reason": "wrong dates"})
    assert response.status_code == 200 and response.get_json()["status"] == "canceled"
    assert response.get_json()["canceled_by"] == "anonymous" and response.get_json()["cancel_reason"] == "wrong dates"
    assert fake_redis.llen("rq:queue:collector") == 0
    again = client.post(f"/execution/cancel?job_id={job_id}", headers=XHR)
    assert again.status_code == 409 and "already ended as 'canceled'" in again.get_json()["message"]
    assert client.post("/execution/cancel", headers=XHR).status_code == 400
    assert client.post("/execution/cancel?job_id=missing", headers=XHR).status_code == 404
    bad = client.post(f"/execution/cancel?job_id={job_id}", json=["carol"])
    assert bad.status_code == 400

    _, body = run(client, {"platform_id": "demo", "settings": {}})
    running = body["job_id"]
    JobStore(fake_redis, unit_config).update(running, {"status": "started"})
    # `canceled_by`, which older clients send, names no one any more: it is kept as the reason.
    response = client.post(f"/execution/cancel?job_id={running}&canceled_by=dave", headers=XHR)
    assert response.status_code == 202 and response.get_json()["canceled_by"] == "anonymous"
    assert response.get_json()["cancel_reason"] == "dave"
    assert fake_redis.sismember("collector:cancel-requests", running)
    events = client.get(f"/execution/events?job_id={running}").get_json()
    assert [e["type"] for e in events] == ["queued", "cancel_requested"]
    assert events[1]["by"] == "anonymous" and events[1]["reason"] == "dave"
    assert client.get("/execution/events?job_id=missing").status_code == 404


def test_recover_settles_a_job_once(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> None:
    job_id = submit(fake_redis, unit_config, registry, {"platform_id": "demo", "settings": {}, "retry": {"max": 0}})
    store = JobStore(fake_redis, unit_config)
    store.update(job_id, {"status": "started", "attempt": 1, "pool": "p1"})
    assert recover(fake_redis, unit_config, job_id, kind="died", cause="gone", pool="p2") is None, "not its pool"
    store.update(job_id, {"worker": "w2"})
    assert recover(fake_redis, unit_config, job_id, kind="died", cause="gone", worker_name="w1") is None, \
        "running on another worker by now"
    assert recover(fake_redis, unit_config, job_id, kind="died", cause="gone", pool="p1") == "failed"
    assert recover(fake_redis, unit_config, job_id, kind="died", cause="gone") is None, "already settled"
    record = store.read(job_id)
    assert record["status"] == "failed" and record["error"]["message"] == "gone" and record["ended_at"]
    assert fake_redis.hget(f"rq:job:{job_id}", "status") == b"failed"
    assert 0 < fake_redis.ttl(store.keys.job(job_id)) <= unit_config.failed_record_ttl_s


def test_slots_hold_the_job_its_deadline_and_a_cancel_per_child() -> None:
    from collector.pool.children import Slots

    slots = Slots(2)
    slots.set(1, "job-a", 123.5)
    slots.ask_cancel(1, "job-a")
    assert (slots.get(0), slots.get(1), slots.deadline(1), slots.cancel_asked(1)) == (None, "job-a", 123.5, "job-a")
    slots.clear(1)
    assert (slots.get(1), slots.deadline(1), slots.cancel_asked(1)) == (None, 0.0, None)


def test_a_relayed_cancel_reaches_only_the_job_it_names(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    from collector.pool.supervision import relay_cancel

    runtime = Runtime(unit_config, fake_redis, registry)
    ctx = RunContext(job_id="j1", platform_id="demo", attempt=1, store=runtime.store, interval_s=1.0)
    runtime.current = ctx
    relay_cancel(runtime, "j0")
    assert ctx.cancelled is False, "a cancel meant for the job before is ignored"
    relay_cancel(runtime, "j1")
    assert ctx.cancelled is True


def test_a_watched_write_runs_again_from_a_fresh_read_when_the_key_changed_meanwhile(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    fake_redis.set("counter", 1)
    seen: list[int] = []

    def attempt(pipe: Any) -> int:
        pipe.watch("counter")
        value = int(pipe.get("counter"))
        seen.append(value)
        if len(seen) == 1:
            fake_redis.set("counter", 10)       # another client writes between our read and our EXEC
        pipe.multi()
        pipe.set("counter", value + 1)
        pipe.execute()
        return value + 1

    assert run_watched(fake_redis, attempt) == 11
    assert seen == [1, 10] and fake_redis.get("counter") == b"11"
    # An attempt that returns early writes nothing and is not run again.
    assert run_watched(fake_redis, lambda pipe: (pipe.watch("counter"), pipe.unwatch(), "left")[-1]) == "left"
    assert fake_redis.get("counter") == b"11"


def test_one_retry_decision_for_a_transient_error_and_a_dead_worker(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    """Runs after a wait (resumes) are no retries: a job that waited once, then failed for now on its second run,
    gets the first retry's delay, whether its platform raised TransientError or its worker died."""
    from unittest import mock

    from collector.errors import TransientError
    from collector.workflows.ends import retry_delay

    policy = {"max": 2, "backoff": 4, "cap": 60, "jitter": 0}
    record = {"status": "started", "attempt": 2, "resumes": 1, "retry": policy, "max_attempts": 3}
    assert retry_delay(record, unit_config) == 4.0
    assert retry_delay({**record, "attempt": 4}, unit_config) is None
    assert decide("died", record, unit_config, "killed")[::2] == ("scheduled", 4.0)

    spec = {"platform_id": "demo", "settings": {"rows": 1}, "retry": policy}
    job_id = submit(fake_redis, unit_config, registry, spec)
    store = JobStore(fake_redis, unit_config)
    store.update(job_id, {"attempt": 1, "resumes": 1})  # it ran once, then waited and was resumed
    demo = registry.get("demo")
    assert demo is not None
    runtime = Runtime(unit_config, fake_redis, registry)
    with mock.patch.object(demo.cls, "_run", side_effect=TransientError("503")), pytest.raises(JobFailedError):
        execute(job_id, runtime)
    assert runtime.outcome is not None and (runtime.outcome.status, runtime.outcome.delay_s) == ("scheduled", 4.0)
    scheduled = [e for e in store.events(job_id) if e["type"] == "retry_scheduled"]
    assert scheduled[0]["delay_s"] == 4.0 and scheduled[0]["attempt"] == 2


KILLED = "killed by signal 9 (SIGKILL)"


def test_a_job_failed_by_its_workers_death_logs_one_error_line(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    failing = submit(fake_redis, unit_config, registry, {"platform_id": "demo", "settings": {}, "retry": {"max": 0}})
    retried = submit(fake_redis, unit_config, registry, {"platform_id": "demo", "settings": {}, "retry": {"max": 2}})
    store = JobStore(fake_redis, unit_config)
    for job_id in (failing, retried):
        store.update(job_id, {"status": "started", "attempt": 1})
    with caplog.at_level(logging.DEBUG, logger="collector"):
        assert recover(fake_redis, unit_config, failing, kind="died", cause=KILLED) == "failed"
        assert recover(fake_redis, unit_config, retried, kind="died", cause=KILLED) == "scheduled"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"job {failing} (demo) failed: WorkerDiedError: killed by signal 9 (SIGKILL)"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"job {retried} (demo) scheduled: WorkerDiedError: killed by signal 9 (SIGKILL)"]
