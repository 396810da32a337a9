"""Bodies that are not Unicode text (invalid UTF-8, lone surrogates in JSON escapes) get a clear 400 on every route
that reads a body, and nothing is written."""

from __future__ import annotations

import fakeredis
import pytest
from flask.testing import FlaskClient

# Every route that parses a JSON body (query parameters the route needs before it reads the body included).
BODY_ROUTES = [
    "/execution/run",
    "/schedules",
    "/process/run",
    "/platforms/check",
    "/execution/resume?job_id=j1",
    "/execution/cancel?job_id=j1",
    "/process/ack?process_id=p1&task=t1",
    "/process/rerun?process_id=p1&task=t1",
]
LONE_SURROGATES = [
    b'{"_id": "\\ud800", "platform_id": "demo", "settings": {}}',            # a high half alone
    b'{"platform_id": "demo", "settings": {"rows": 1}, "_id": "a\\udfffb"}',  # a low half alone
    b'{"platform_id": "demo", "settings": {"\\udbff": 1}}',                    # in a key
    b'{"platform_id": "demo", "settings": {"tags": ["ok", "\\ud83d"]}}',       # in a list, half an emoji
]


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("body", LONE_SURROGATES, ids=["high", "low", "key", "list"])
def test_a_lone_surrogate_is_a_clear_400_and_writes_nothing(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, route: str, body: bytes
) -> None:
    answer = client.post(route, data=body, content_type="application/json")
    assert answer.status_code == 400, (route, answer.json)
    assert answer.json["error"] == "bad_request"
    assert "lone surrogate" in answer.json["message"] and "valid Unicode" in answer.json["message"]
    assert fake_redis.keys("*") == []


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_invalid_utf8_is_a_clear_400_and_writes_nothing(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, route: str
) -> None:
    answer = client.post(route, data=b'{"platform_id": "d\xe9mo", "settings": {}}', content_type="application/json")
    assert answer.status_code == 400, (route, answer.json)
    assert "not valid UTF-8" in answer.json["message"]
    assert fake_redis.keys("*") == []


def test_a_surrogate_pair_is_one_character_and_accepted(client: FlaskClient) -> None:
    answer = client.post("/execution/run", content_type="application/json",
                         data=b'{"_id": "\\ud83d\\ude00", "platform_id": "demo", "settings": {"rows": 1}}')
    assert answer.status_code == 202, answer.json
    assert answer.json["_id"] == "\U0001f600"
