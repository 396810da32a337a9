"""A real redis-server restarted without persistence (the loss is reported), with AOF (nothing lost, nothing
reported), and frozen with SIGSTOP (every request ends within 5 s as a 503)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.app import create_app
from collector.cli.embedded import EmbeddedRedis
from collector.config import Config
from collector.types import new_job_id
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import close

LOSS_LOGGER = "collector.store.dataloss"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test alone (it is restarted, or frozen)."""
    data = tmp_path / "redis-data"
    data.mkdir()
    server = EmbeddedRedis(dir=str(data)).start()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)  # a test that failed while Redis was frozen
    server.stop()


def restart(server: EmbeddedRedis, *, appendonly: bool) -> None:
    server.stop()
    server.process = EmbeddedRedis(port=server.port, appendonly=appendonly, dir=server.dir).start().process


def submit(served: ServedApp) -> str:
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}})
    assert status == 202, body
    return body["job_id"]


def loss_lines(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOSS_LOGGER and r.levelno == level and text in r.getMessage()]


def test_a_redis_restarted_without_persistence_is_reported_and_its_jobs_answer_lost(
    config: Config, private_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOSS_LOGGER)
    served = ServedApp(create_app(dataclasses.replace(config, redis_url=private_redis.url)))
    try:
        assert len(loss_lines(caplog, logging.WARNING, "keeps no data on disk")) == 1
        lost = [submit(served) for _ in range(3)]
        status, body = served.request("POST", "/system/alive")
        assert status == 200 and body["data_loss"]["detected"] is False, body

        restart(private_redis, appendonly=False)
        status, body = served.request("POST", "/system/alive")
        assert status == 200, body
        loss = body["data_loss"]
        assert loss["detected"] is True and loss["noticed_at"].endswith("Z"), loss
        assert len(loss["losses"]) == 1
        assert len(loss_lines(caplog, logging.ERROR, "lost its data")) == 1

        for job_id in lost:
            status, body = served.request("GET", f"/execution/get?job_id={job_id}")
            assert status == 410, body
            assert body["error"] == "job_lost" and "lost with Redis data" in body["message"], body
            assert body["details"]["data_loss_noticed_at"] == loss["noticed_at"]
        status, body = served.request("GET", f"/execution/events?job_id={lost[0]}")
        assert status == 410 and body["error"] == "job_lost", body

        # Ids that never existed stay a plain 404: made after the loss, or random (the form earlier versions made).
        for never in (new_job_id(), uuid.uuid4().hex):
            status, body = served.request("GET", f"/execution/get?job_id={never}")
            assert status == 404 and body["error"] == "not_found", body
        after = submit(served)
        status, body = served.request("GET", f"/execution/get?job_id={after}")
        assert status == 200 and body["status"] == "queued", body

        status, text = served.request("GET", "/metrics")
        assert status == 200
        assert "collector_redis_data_losses 1.0" in text, text
        noticed = [line for line in text.splitlines()
                   if line.startswith("collector_redis_data_loss_noticed_timestamp_seconds ")]
        assert noticed and abs(float(noticed[0].split()[1]) - time.time()) < 600, noticed

        served.request("POST", "/system/alive")
        assert len(loss_lines(caplog, logging.ERROR, "lost its data")) == 1, "the loss is logged once"
        assert len(loss_lines(caplog, logging.WARNING, "keeps no data on disk")) == 1, "the warning comes once"
    finally:
        close(served)


def test_a_redis_restarted_from_its_aof_loses_nothing_and_reports_nothing(
    config: Config, private_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOSS_LOGGER)
    restart(private_redis, appendonly=True)
    served = ServedApp(create_app(dataclasses.replace(config, redis_url=private_redis.url)))
    try:
        job_id = submit(served)
        restart(private_redis, appendonly=True)
        status, body = served.request("GET", f"/execution/get?job_id={job_id}")
        assert status == 200 and body["status"] == "queued", body
        status, body = served.request("POST", "/system/alive")
        assert status == 200 and body["data_loss"] == {"detected": False, "run": body["data_loss"]["run"]}, body
        status, text = served.request("GET", "/metrics")
        assert "collector_redis_data_losses 0.0" in text
        assert not [r for r in caplog.records if r.name == LOSS_LOGGER and r.levelno >= logging.WARNING]
    finally:
        close(served)


def test_with_redis_frozen_every_request_ends_within_5_s_as_a_503(
    config: Config, private_redis: EmbeddedRedis
) -> None:
    served = ServedApp(create_app(dataclasses.replace(config, redis_url=private_redis.url)))
    assert private_redis.process is not None
    try:
        job_id = submit(served)
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        try:
            # Pooled connections and new ones alike: more requests than pooled connections, a few at once.
            requests = [
                ("GET", f"/execution/get?job_id={job_id}", None),
                ("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}}),
                ("POST", "/system/alive", None),
                ("GET", f"/execution/get?job_id={job_id}", None),
                ("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}}),
                ("GET", "/metrics", None),
                ("GET", "/rq/0/data/queues.json", None),
            ]
            for method, path, body in requests:
                started = time.monotonic()
                status, answer = served.request(method, path, body)
                took = time.monotonic() - started
                assert took < 5.0, f"{method} {path} took {took:.1f} s"
                assert status == 503, (method, path, answer)
                assert isinstance(answer, dict), (method, path, answer)
                where = answer["redis"] if path == "/system/alive" else answer
                assert "unreachable" in (where.get("message") or where.get("error")), answer
            started = time.monotonic()
            status, answer = served.request("GET", "/system/alive")
            assert status == 200 and answer["alive"] is True and time.monotonic() - started < 1.0
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        status, answer = served.request("GET", f"/execution/get?job_id={job_id}")
        assert status == 200 and answer["status"] == "queued", answer
    finally:
        close(served)


def test_a_pool_notices_the_loss_on_its_own_and_the_api_reports_it(
    config: Config, private_redis: EmbeddedRedis, start_pool: Callable[..., PoolProcess]
) -> None:
    cfg = dataclasses.replace(config, redis_url=private_redis.url)
    pool = start_pool(1, cfg)
    wait_for(lambda: "keeps no data on disk" in pool.output(), timeout_s=30, what="the pool's persistence warning")
    served = ServedApp(create_app(cfg))
    try:
        lost = submit(served)
        wait_for(lambda: served.request("GET", f"/execution/get?job_id={lost}")[1].get("status") == "finished",
                 timeout_s=30, what="the job to finish")
        restart(private_redis, appendonly=False)
        wait_for(lambda: "lost its data" in pool.output(), timeout_s=60, what="the pool to notice the loss")
        status, body = served.request("POST", "/system/alive")
        assert status == 200 and body["data_loss"]["detected"] is True, body
        status, body = served.request("GET", f"/execution/get?job_id={lost}")
        assert status == 410 and body["error"] == "job_lost", body
        assert wait_for(lambda: served.request("GET", f"/execution/get?job_id={submit(served)}")[1]
                        .get("status") == "finished", timeout_s=60, what="the pool to run jobs after the loss")
        assert pool.output().count("lost its data") == 1 and pool.output().count("keeps no data on disk") == 1
    finally:
        close(served)
