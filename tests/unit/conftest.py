"""Unit fixtures: the app factory and the runner on fakeredis (no server, no child processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector.app import create_app
from collector.config import Config
from collector.specs.registry import Registry
from collector.store.rq import RQ
from collector.workflows.recovery import enqueue_due

SECRET_KEY = "unit-test-key-that-is-32-bytes-long"


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def unit_config(data_dir: Path) -> Config:
    return Config(secret_key=SECRET_KEY, progress_interval_s=0.05, data_dir=str(data_dir))


@pytest.fixture
def registry() -> Registry:
    return Registry.discover("platforms")


@pytest.fixture
def client(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> FlaskClient:
    app = create_app(unit_config, connection=fake_redis, registry=registry, dashboard=False)
    return app.test_client()


def enqueue_due_now(connection: fakeredis.FakeRedis, config: Config, job_id: str) -> int:
    """Bring the retry of `job_id` due now and move it back to the queue, as a pool supervisor does when its time
    comes; the number of jobs moved."""
    connection.zadd(RQ(connection, config).scheduled_key, {job_id: 0})
    return enqueue_due(connection, config)
