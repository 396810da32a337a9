"""Connection checks: `collector check` in this process, `POST /platforms/check` in a worker, secrets sealed."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from collector.testkit import redis_contents
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.test_devkit_run import KIT_PLATFORMS, collector

GOOD = {"platform_id": "vault", "settings": {"username": "ada", "password": "open-sesame"}}
BAD = {"platform_id": "vault", "settings": {"username": "ada", "password": "wrong-horse-battery"}}


@pytest.fixture
def kit_config(config: Config) -> Config:
    return dataclasses.replace(config, platforms_package=KIT_PLATFORMS, check_timeout_s=10)


@pytest.fixture
def kit_served(kit_config: Config) -> Iterator[ServedApp]:
    served = ServedApp(create_app(kit_config))
    yield served
    served.close()


def test_check_command_passes_fails_and_says_when_there_is_nothing_to_check() -> None:
    done = collector("check", "-", stdin=json.dumps(GOOD), COLLECTOR_PLATFORMS_PACKAGE=KIT_PLATFORMS)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is True and answer["checks"] == [
        {"name": "platform vault", "ok": True, "message": "logged in as ada"}]
    done = collector("check", "-", stdin=json.dumps(BAD), COLLECTOR_PLATFORMS_PACKAGE=KIT_PLATFORMS)
    assert done.returncode == 1
    assert json.loads(done.stdout)["message"] == "platform vault: FatalError: login refused for ada with password ***"
    assert "wrong-horse-battery" not in done.stdout + done.stderr
    done = collector("check", "-", stdin='{"platform_id": "demo"}')
    assert done.returncode == 0 and json.loads(done.stdout)["checks"][0]["ok"] is None
    assert "no _check: nothing was tested" in done.stdout
    done = collector("check", "-", stdin='{"platform_id": "vault", "settings": {}}',
                     COLLECTOR_PLATFORMS_PACKAGE=KIT_PLATFORMS)
    assert done.returncode == 2 and "settings.username" in done.stderr and "settings.password" in done.stderr


def test_platforms_check_runs_in_a_worker(
    kit_served: ServedApp, kit_config: Config, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    start_pool(1, kit_config)
    status, answer = kit_served.request("POST", "/platforms/check", GOOD)
    assert status == 200 and answer["ok"] is True and answer["message"] == "platform vault: logged in as ada"
    status, answer = kit_served.request("POST", "/platforms/check", BAD)
    assert status == 200 and answer["ok"] is False
    assert "login refused for ada with password ***" in answer["message"]
    assert "wrong-horse-battery" not in json.dumps(answer)
    # Nothing of the checks lingers but RQ's own short-lived bookkeeping, and no secret in plain text anywhere.
    assert redis_client.keys("collector:check:*") == []
    contents = redis_contents(redis_client)
    assert b"wrong-horse-battery" not in contents and b"open-sesame" not in contents


def test_a_bad_spec_is_422_and_writes_nothing(kit_served: ServedApp, redis_client: redis.Redis) -> None:
    status, body = kit_served.request("POST", "/platforms/check", {"platform_id": "vault", "settings": {"rows": "x"}})
    assert status == 422
    assert set(body["details"]) == {"settings.username", "settings.password", "settings.rows"}
    assert redis_client.keys("*") == []


def test_no_worker_is_504_with_a_clear_message_and_the_secret_stays_sealed(
    kit_config: Config, redis_client: redis.Redis
) -> None:
    served = ServedApp(create_app(dataclasses.replace(kit_config, check_timeout_s=2)))
    answers: list[tuple[int, dict]] = []
    try:
        thread = threading.Thread(target=lambda: answers.append(served.request("POST", "/platforms/check", GOOD)))
        thread.start()
        key = wait_for(lambda: redis_client.keys("collector:check:*"), what="the check request")[0]
        record = redis_client.hgetall(key)
        assert record[b"platform_id"] == b"vault" and b"secrets" in record
        assert b"open-sesame" not in b"".join(record.values())
        assert json.loads(record[b"settings"])["password"] == "***"
        thread.join(10)
    finally:
        served.close()
    status, body = answers[0]
    assert status == 504 and body["error"] == "check_timeout"
    assert "no worker answered the check of 'vault' within 2 s" in body["message"]
    assert redis_client.keys("collector:check:*") == []  # a worker starting later finds nothing to run
