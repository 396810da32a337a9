"""A Redis password given in the URL's query (`?password=`, which redis-py takes) is the operator's secret: no
answer, dashboard page or log line shows it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import ServedApp

REDIS_PASSWORD = "Redis-Pw-0123456789-abcdef"
READER = "reader-token-0123456789abcdef"


@pytest.fixture
def password_on_redis(redis_client: redis.Redis) -> Iterator[str]:
    """The session's private Redis asks for a password for the length of a test."""
    redis_client.config_set("requirepass", REDIS_PASSWORD)
    try:
        yield REDIS_PASSWORD
    finally:
        kwargs = redis_client.connection_pool.connection_kwargs
        with redis.Redis(host=kwargs["host"], port=kwargs["port"], password=REDIS_PASSWORD) as authed:
            authed.config_set("requirepass", "")


def test_a_redis_password_in_the_urls_query_shows_nowhere(
    config: Config, password_on_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{config.redis_url}?password={password_on_redis}"
    served = ServedApp(create_app(dataclasses.replace(config, redis_url=url, api_tokens=f"viewer:read:{READER}")))
    reader = {"Authorization": f"Bearer {READER}"}
    try:
        status, alive = served.request("POST", "/system/alive", headers=reader)
        assert status == 200 and alive["redis"]["url"].endswith("?password=***"), alive
        status, page = served.request("GET", "/rq/", headers=reader)
        assert status == 200 and "password=***" in page
        status, queues = served.request("GET", "/rq/0/data/queues.json", headers=reader)
        assert status == 200 and "queues" in queues, "rq-dashboard reads through the API's connection"
        shown = {"POST /system/alive": json.dumps(alive), "GET /rq/": page, "the log": caplog.text}
        assert not [where for where, text in shown.items() if password_on_redis in text], shown.keys()
    finally:
        served.close()
