"""A Redis at its maxmemory (noeviction) refuses writes: the API answers 503, a job's writes wait for it."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis

from collector.app import create_app
from collector.config import Config
from collector.run import context
from collector.specs.registry import Registry


def demo() -> dict[str, Any]:
    return {"platform_id": "demo", "settings": {"rows": 1}}



def test_a_write_refused_by_a_full_redis_is_retried_until_it_goes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context.time, "sleep", lambda _: None)
    tries: list[int] = []

    def write() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
        return "written"

    assert context.until_written(write, wait_s=60, what="job j: final state") == "written" and len(tries) == 3


def test_a_full_redis_is_503_with_the_reason(unit_config: Config, registry: Registry,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    full = fakeredis.FakeRedis()

    def refuse(*_: Any, **__: Any) -> None:
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr(redis.client.Pipeline, "execute", refuse)
    client = create_app(unit_config, connection=full, registry=registry, dashboard=False).test_client()
    for path, body in (("/execution/run", demo()), ("/schedules", {"spec": demo(), "interval_s": 3600})):
        response = client.post(path, json=body)
        assert response.status_code == 503, path
        assert response.get_json()["error"] == "redis_full" and "maxmemory" in response.get_json()["message"]
