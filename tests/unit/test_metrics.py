"""Counters and durations in the shared Redis hash, rendered as Prometheus text by GET /metrics."""

from __future__ import annotations

import fakeredis
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from collector.config import Config
from collector.errors import JobFailedError
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.records import Keys

KEYS = Keys("collector")
XHR = {"X-Requested-With": "XMLHttpRequest"}  # what a POST without a JSON body carries to show it is no form


def samples(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for s in family.samples
    }


def test_job_events_and_durations_are_counted_per_platform(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    runtime = Runtime(unit_config, fake_redis, registry, worker_name="w")
    ok = client.post("/execution/run", json={"platform_id": "demo", "settings": {"rows": 2}}).get_json()["job_id"]
    bad = client.post("/execution/run", json={"platform_id": "demo", "settings": {"fail_at": 1}}).get_json()["job_id"]
    client.post("/execution/run", json={"platform_id": "demo", "settings": {}})
    execute(ok, runtime)
    with pytest.raises(JobFailedError):
        execute(bad, runtime)
    got = samples(client)
    demo = (("platform", "demo"),)
    assert got[("collector_jobs_submitted_total", demo)] == 3
    assert got[("collector_jobs_started_total", demo)] == 2
    assert got[("collector_jobs_finished_total", demo)] == 1
    assert got[("collector_jobs_failed_total", demo)] == 1
    assert got[("collector_job_duration_seconds_count", demo)] == 2
    assert got[("collector_job_duration_seconds_bucket", (("le", "+Inf"), ("platform", "demo")))] == 2
    assert 0 < got[("collector_job_duration_seconds_sum", demo)] < 5
    assert got[("collector_queue_depth", (("queue", "collector"),))] == 3  # nothing dequeued them from RQ
    assert got[("collector_workers", ())] == 0
    assert got[("collector_redis_rtt_seconds", ())] > 0


def test_buckets_are_cumulative(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    from collector.store.metrics import job_ended

    for seconds in (0.001, 0.3, 0.3, 7200.0):
        with fake_redis.pipeline() as pipe:
            job_ended(pipe, KEYS, job_id="j", platform_id="demo", status="finished", duration_s=seconds)
            pipe.execute()
    got = samples(client)

    def bucket(le: str) -> float:
        return got[("collector_job_duration_seconds_bucket", (("le", le), ("platform", "demo")))]

    assert (bucket("0.01"), bucket("0.25"), bucket("0.5"), bucket("3600.0"), bucket("+Inf")) == (1, 1, 3, 3, 4)


def test_a_job_without_record_counts_no_start(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                              registry: Registry) -> None:
    with pytest.raises(JobFailedError):
        execute("gone", Runtime(unit_config, fake_redis, registry))
    assert not any(k.startswith(b"started") for k in fake_redis.hkeys(KEYS.metrics()))


def test_retries_and_cancels_are_counted(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    from collector.workflows.recovery import recover

    queued = client.post("/execution/run", json={"platform_id": "demo", "settings": {}}).get_json()["job_id"]
    assert client.post(f"/execution/cancel?job_id={queued}", headers=XHR).status_code == 200
    running = client.post("/execution/run", json={"platform_id": "demo", "settings": {}}).get_json()["job_id"]
    fake_redis.hset(f"collector:job:{running}", mapping={"status": "started", "worker": "w"})
    assert recover(fake_redis, unit_config, running, kind="died", cause="killed", worker_name="w") == "scheduled"
    got = samples(client)
    demo = (("platform", "demo"),)
    assert got[("collector_jobs_canceled_total", demo)] == 1
    assert got[("collector_jobs_retried_total", demo)] == 1
