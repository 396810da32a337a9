"""Retry by hand, claims and a platform's own events, on fakeredis."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector import defaults
from collector.config import Config
from collector.errors import ConflictError, JobFailedError
from collector.run.context import RunContext
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from collector.workflows.cancel import cancel
from collector.workflows.claims import claim
from collector.workflows.ends import result_summary
from tests.secret_platforms import make_package
from tests.unit.conftest import enqueue_due_now

XHR = {"X-Requested-With": "XMLHttpRequest"}


def submit(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry, **settings: object) -> str:
    submitter = Submitter(connection=fake_redis, config=config, registry=registry)
    return submitter.submit({"platform_id": "demo", "settings": settings, "retry": {"max": 1}})["job_id"]


def test_a_canceled_job_is_retried_as_a_new_attempt_and_only_ended_jobs_can_be(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, unit_config, registry, rows=3)
    answer = client.post(f"/execution/retry?job_id={job_id}", headers=XHR)
    assert answer.status_code == 409 and "'queued'" in answer.get_json()["message"]
    cancel(fake_redis, unit_config, job_id, by="ops", reason="wrong day")
    assert fake_redis.ttl(f"collector:job:{job_id}") > 0
    answer = client.post(f"/execution/retry?job_id={job_id}", headers=XHR)
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["previous"] == "canceled" and answer.get_json()["from_checkpoint"] is False
    record = client.get(f"/execution/get?job_id={job_id}").get_json()
    assert record["status"] == "queued" and "canceled_by" not in record and "cancel_reason" not in record
    assert record["retries_by_hand"] == 1 and record["max_attempts"] == 2
    ttl = fake_redis.ttl(f"collector:job:{job_id}")
    assert unit_config.open_record_ttl_s - 60 < ttl <= unit_config.open_record_ttl_s, "the open record's safety TTL"
    assert fake_redis.zscore("collector:jobs:open", job_id) is not None, "the sweep watches it again"
    assert fake_redis.lrange("rq:queue:collector", 0, -1) == [job_id.encode()]
    assert fake_redis.zscore("rq:canceled:collector", job_id) is None
    kinds = [e["type"] for e in client.get(f"/execution/events?job_id={job_id}").get_json()]
    assert kinds == ["queued", "canceled", "retried"]
    assert client.post("/execution/retry?job_id=nope", headers=XHR).status_code == 404
    assert client.post("/execution/retry", headers=XHR).status_code == 400


def test_events_after_an_id_are_only_the_newer_ones(client: FlaskClient, fake_redis: fakeredis.FakeRedis,
                                                    unit_config: Config, registry: Registry) -> None:
    job_id = submit(fake_redis, unit_config, registry, rows=3)
    cancel(fake_redis, unit_config, job_id, by="ops")
    first, second = client.get(f"/execution/events?job_id={job_id}").get_json()
    assert first["type"] == "queued" and first["settings"]["rows"] == 3 and second["type"] == "canceled"
    newer = client.get(f"/execution/events?job_id={job_id}&after={first['id']}").get_json()
    assert newer == [second]
    assert client.get(f"/execution/events?job_id={job_id}&after={second['id']}").get_json() == []
    bad = client.get(f"/execution/events?job_id={job_id}&after=yesterday")
    assert bad.status_code == 400 and bad.get_json()["details"] == {"after": ["not an event id"]}


def test_a_claimed_job_is_off_the_queue_and_a_second_claim_says_why(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = submit(fake_redis, unit_config, registry, rows=2)
    claim(fake_redis, unit_config, job_id, by="local:host.1")
    assert fake_redis.llen("rq:queue:collector") == 0
    with pytest.raises(ConflictError, match="a worker took it off the queue just now"):
        claim(fake_redis, unit_config, job_id, by="local:host.2")
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="local:host.1")
    assert execute(job_id, runtime) == {"rows": 2}
    with pytest.raises(ConflictError, match="it ended 'finished'"):
        claim(fake_redis, unit_config, job_id, by="local:host.2")
    record = JobStore(fake_redis, unit_config).read(job_id)
    assert record["claimed_by"] == "local:host.1" and record["attempt"] == 1


def test_ctx_event_adds_the_platforms_own_event_masked_and_refuses_bad_ones(
    fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    store = JobStore(fake_redis, unit_config)
    ctx = RunContext(job_id="j1", platform_id="demo", attempt=1, store=store, interval_s=1.0, secrets=["hunter22"])
    ctx.event("page_fetched", page=3, url="https://x.invalid/?key=hunter22")
    (event,) = store.events("j1")
    assert event["type"] == "page_fetched" and event["origin"] == "platform" and event["page"] == 3
    assert event["url"] == "https://x.invalid/?key=***"
    for name in ("finished", "Page", "", "a" * 65):
        with pytest.raises(ValueError, match="event name"):
            ctx.event(name)
    with pytest.raises(ValueError, match="the event's own fields"):
        ctx.event("page", type="x")
    with pytest.raises(ValueError, match="JSON-able"):
        ctx.event("page", when=object())
    with pytest.raises(ValueError, match="over"):
        ctx.event("page", blob="x" * defaults.EVENT_MAX_BYTES)
    assert len(store.events("j1")) == 1


def test_a_finished_event_carries_a_small_result_and_only_the_size_of_a_large_one() -> None:
    assert result_summary({"rows": 3}) == {"rows": 3}
    large = result_summary({"ids": list(range(5000))})
    assert large["shown"] is False and large["bytes"] > defaults.EVENT_RESULT_MAX_BYTES


def test_ctx_event_keeps_the_first_events_of_an_attempt_then_warns_once(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(defaults, "PLATFORM_EVENTS_PER_JOB", 2)
    store = JobStore(fake_redis, unit_config)
    ctx = RunContext(job_id="j2", platform_id="demo", attempt=1, store=store, interval_s=1.0)
    for n in range(5):
        ctx.event("page", n=n)
    assert [e["n"] for e in store.events("j2")] == [0, 1]
    assert [r.getMessage() for r in caplog.records].count("[demo j2] more than 2 ctx.event calls: later ones are "
                                                          "not kept") == 1


HASTY = '''
    from collector.platform import Platform, TransientError
    from collector.workflows.cancel import cancel

    class Hasty(Platform):
        """Notes each run; cancels itself on its first (when told to) and fails it with a transient error before
        that cancel reaches it."""

        def __init__(self, cancel_first: bool = False) -> None:
            self.cancel_first = cancel_first

        def _run(self, ctx):
            store = ctx._store
            store.connection.rpush("ran", ctx.attempt)
            if ctx.attempt == 1:
                if self.cancel_first:
                    cancel(store.connection, store.config, ctx.job_id, by="ops")
                raise TransientError("the source hiccuped")
            return {"ran_again": True}
'''


@pytest.mark.parametrize("cancel_seen", ["when the error is classified", "only when the retry starts"])
def test_a_cancel_that_came_while_it_ran_is_not_followed_by_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis, unit_config: Config,
    cancel_seen: str
) -> None:
    """A cancel acknowledged while the job ran, which reaches the run only after it raised a transient error:
    the job ends `stopped`, and never runs again (its retry would run a platform that never looks at
    `ctx.cancelled` to its end)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.discover(make_package(tmp_path, "hastyplatforms", hasty=HASTY))
    classified_first = cancel_seen == "when the error is classified"
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=registry).submit(
        {"platform_id": "hasty", "settings": {"cancel_first": classified_first}, "retry": {"max": 2}})["job_id"]
    runtime = Runtime(unit_config, fake_redis, registry)
    with pytest.raises(JobFailedError):
        execute(job_id, runtime)
    if not classified_first:  # the cancel landed after the run's check, before its end: the end kept it
        assert fake_redis.hget(f"collector:job:{job_id}", "status") == b"scheduled"
        fake_redis.hset(f"collector:job:{job_id}", mapping={"cancel_requested_at": "2026-01-01T00:00:00.000Z",
                                                             "canceled_by": "ops"})
        assert enqueue_due_now(fake_redis, unit_config, job_id) == 1
        with pytest.raises(JobFailedError, match="stopped on request"):
            execute(job_id, runtime)
    record = JobStore(fake_redis, unit_config).view(job_id, full=False)
    assert record is not None and record["status"] == "stopped", record
    assert record["error"]["message"] == "stopped on request of ops"
    assert fake_redis.lrange("ran", 0, -1) == [b"1"], "the platform ran once"
