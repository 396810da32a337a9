"""A platform file that failed to load: its jobs are refused saying so (422, with the reason), `up`'s banner names
it, and `POST /system/alive` reports the service `degraded`."""

from __future__ import annotations

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector.app import create_app
from collector.cli.main import banner
from collector.config import Config
from collector.specs.registry import Registry

REASON = "ImportError: this file is broken on purpose"


@pytest.fixture
def kit() -> Registry:
    registry = Registry.discover("tests.devkit_platforms")
    assert REASON in registry.broken["broken"]
    return registry


@pytest.fixture
def kit_client(fake_redis: fakeredis.FakeRedis, unit_config: Config, kit: Registry) -> FlaskClient:
    return create_app(unit_config, connection=fake_redis, registry=kit, dashboard=False).test_client()


@pytest.mark.parametrize("path", ["/execution/run", "/platforms/check"])
def test_a_job_for_a_broken_platform_says_its_file_failed_to_load_and_why(
    kit_client: FlaskClient, fake_redis: fakeredis.FakeRedis, path: str
) -> None:
    response = kit_client.post(path, json={"platform_id": "broken", "settings": {}})
    body = response.get_json()
    assert response.status_code == 422
    assert "tests/devkit_platforms/broken.py failed to load" in body["message"] and REASON in body["message"]
    assert "is not a platform" not in response.get_data(as_text=True)
    assert REASON in body["details"]["platform_id"][0]
    assert fake_redis.dbsize() == 0


def test_an_unknown_platform_is_still_not_a_platform(kit_client: FlaskClient) -> None:
    body = kit_client.post("/execution/run", json={"platform_id": "nope"}).get_json()
    assert "'nope' is not a platform" in body["details"]["platform_id"][0]


def test_diagnostics_report_degraded_with_the_broken_platforms(kit_client: FlaskClient) -> None:
    response = kit_client.post("/system/alive")
    body = response.get_json()
    assert response.status_code == 200 and body["healthy"] is True
    assert body["status"] == "degraded"
    assert len(body["degraded"]) == 1 and "'broken'" in body["degraded"][0] and REASON in body["degraded"][0]
    assert body["platforms"]["broken"] == {"broken": REASON}


def test_diagnostics_say_ok_when_every_platform_loaded(client: FlaskClient) -> None:
    body = client.post("/system/alive").get_json()
    assert body["status"] == "ok" and body["degraded"] == []


def test_diagnostics_say_down_while_redis_is_unreachable(unit_config: Config, kit: Registry) -> None:
    from collector.store.records import connect

    app = create_app(unit_config, connection=connect("redis://127.0.0.1:1/0"), registry=kit, dashboard=False)
    response = app.test_client().post("/system/alive")
    assert response.status_code == 503 and response.get_json()["status"] == "down"


def test_the_banner_of_up_lists_the_broken_platforms(kit: Registry, registry: Registry) -> None:
    text = banner("http://127.0.0.1:8000", workers="2", redis="redis://127.0.0.1:1234/0", access="open", registry=kit)
    broken = [line for line in text.splitlines() if "BROKEN" in line]
    assert len(broken) == 1 and "'broken'" in broken[0] and "broken.py failed to load" in broken[0]
    assert REASON in broken[0]
    clean = banner("http://127.0.0.1:8000", workers="2", redis="r", access="open", registry=registry)
    assert "BROKEN" not in clean and "http://127.0.0.1:8000/rq" in clean


@pytest.mark.parametrize("platform_id", [{}, [], 3, True])
@pytest.mark.parametrize("path", ["/execution/run", "/platforms/check"])
def test_a_platform_id_that_is_no_string_is_a_field_error_beside_broken_platforms(
    kit_client: FlaskClient, fake_redis: fakeredis.FakeRedis, path: str, platform_id: object
) -> None:
    response = kit_client.post(path, json={"platform_id": platform_id, "settings": {}})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "platform_id" in response.get_json()["details"]
    assert fake_redis.dbsize() == 0
