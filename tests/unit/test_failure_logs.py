"""A failed job logs one ERROR line (platform, job id, cause); its traceback is on the record and at DEBUG only."""

from __future__ import annotations

import logging

import fakeredis
import pytest
from rq.serializers import JSONSerializer

from collector.config import Config
from collector.pool.children import CollectorWorker
from collector.run import runner
from collector.run.runner import Runtime, install
from collector.specs.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter


def test_a_failed_job_logs_one_error_line_and_its_traceback_at_debug(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(runner, "_runtime", None)
    install(Runtime(unit_config, fake_redis, registry, worker_name="w-fail"))
    submitter = Submitter(connection=fake_redis, config=unit_config, registry=registry)
    spec = {"platform_id": "demo", "settings": {"rows": 3, "fail_at": 2}, "retry": {"max": 0}}
    job_id = submitter.submit(spec)["job_id"]
    ok_id = submitter.submit({"platform_id": "demo", "settings": {"rows": 1}})["job_id"]
    worker = CollectorWorker(["collector"], connection=fake_redis, name="w-fail", serializer=JSONSerializer)
    with caplog.at_level(logging.DEBUG):
        worker.work(burst=True, logging_level="DEBUG")

    record = JobStore(fake_redis, unit_config).view(job_id)
    assert record is not None and record["status"] == "failed"
    assert "Traceback" in record["error"]["traceback"] and "fail_at=2" in record["error"]["traceback"]
    assert JobStore(fake_redis, unit_config).view(ok_id)["status"] == "finished"  # type: ignore[index]

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("collector.specs")]
    assert len(errors) == 1, [r.getMessage()[:200] for r in errors]
    line = errors[0].getMessage()
    assert "\n" not in line and job_id in line and "(demo)" in line and "FatalError: demo failure at row 2" in line
    assert (errors[0].job_id, errors[0].platform_id, errors[0].event) == (job_id, "demo", "failed")  # type: ignore[attr-defined]
    assert errors[0].exc_info is None and not errors[0].exc_text

    traced = [r for r in caplog.records if "Traceback" in r.getMessage() or r.exc_info]
    assert traced and all(r.levelno == logging.DEBUG for r in traced)
    assert any(job_id in r.getMessage() and "fail_at=2" in r.getMessage() for r in traced)


def test_a_retried_job_logs_a_warning_not_an_error(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = Registry.discover("tests.devkit_platforms")
    monkeypatch.setattr(runner, "_runtime", None)
    install(Runtime(unit_config, fake_redis, kit, worker_name="w-retry"))
    submitter = Submitter(connection=fake_redis, config=unit_config, registry=kit)
    settings = {"base_url": "http://127.0.0.1:9", "api_key": "k", "day": "2024-05-31"}
    job_id = submitter.submit({"platform_id": "rates", "settings": settings, "retry": {"max": 1}})["job_id"]
    worker = CollectorWorker(["collector"], connection=fake_redis, name="w-retry", serializer=JSONSerializer)
    with caplog.at_level(logging.DEBUG):
        worker.work(burst=True, logging_level="DEBUG")

    assert JobStore(fake_redis, unit_config).view(job_id)["status"] == "scheduled"  # type: ignore[index]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("collector.specs")] == []
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and job_id in r.getMessage()]
    assert len(warned) == 1 and "(rates) scheduled: TransientError" in warned[0].getMessage()
