"""The seed endpoints through the app factory on fakeredis: answers, validation, nothing half-written."""

from __future__ import annotations

import json

import fakeredis
import pytest
from flask.testing import FlaskClient
from rq.job import Job
from rq.serializers import JSONSerializer

from collector import __version__


def run(client: FlaskClient, body: object) -> tuple[int, dict]:
    response = client.post("/execution/run", json=body)
    return response.status_code, response.get_json()


def test_get_alive_answers_without_touching_redis(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    response = client.get("/system/alive")
    assert response.status_code == 200
    assert response.get_json() == {"alive": True, "version": __version__}
    assert fake_redis.dbsize() == 0


def test_post_alive_reports_redis_queues_workers_and_platforms(client: FlaskClient) -> None:
    response = client.post("/system/alive")
    body = response.get_json()
    assert response.status_code == 200
    assert body["redis"]["ok"] is True and body["redis"]["ping_ms"] >= 0
    assert body["queues"]["collector"] == {"queued": 0, "started": 0, "failed": 0, "finished": 0}
    assert body["workers"]["count"] == 0
    assert body["platforms"]["broken"] == {}


def test_platforms_get_describes_demo(client: FlaskClient) -> None:
    body = client.get("/platforms/get").get_json()
    demo = next(p for p in body["platforms"] if p["id"] == "demo")
    assert demo["description"]
    settings = {s["name"]: s for s in demo["settings"]}
    assert settings["rows"]["default"] == 100 and settings["rows"]["type"] == "integer"
    assert settings["fail_at"]["required"] is False


def test_run_queues_a_job_with_its_record_and_an_argument_free_rq_job(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    status, body = run(client, {"_id": "t1", "platform_id": "demo", "settings": {"rows": 5}})
    assert status == 202 and body["status"] == "queued" and body["_id"] == "t1"
    job_id = body["job_id"]
    record = client.get(f"/execution/get?job_id={job_id}").get_json()
    assert record["status"] == "queued" and record["client_id"] == "t1" and record["platform_id"] == "demo"
    assert record["settings"] == {"rows": 5, "delay_s": 0.0, "fail_at": None}
    assert record["datasets"] == {}
    job = Job.fetch(job_id, connection=fake_redis, serializer=JSONSerializer)
    assert job.func_name == "collector.runner.run_job" and not job.args and not job.kwargs
    assert fake_redis.lrange("rq:queue:collector", 0, -1) == [job_id.encode()]


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "needle"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"platform_id": NaN}', "application/json", 400, "NaN"),
        (b"\xff\xfe", "application/json", 400, "UTF-8"),
        (b'{"platform_id": "demo"}', "text/plain", 400, "Content-Type"),
        (b"[1, 2]", "application/json", 422, "JSON object"),
    ],
)
def test_malformed_bodies_get_a_clear_error_and_write_nothing(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, raw: bytes, content_type: str, status: int, needle: str
) -> None:
    response = client.post("/execution/run", data=raw, content_type=content_type)
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"error", "message", "details"} and needle in body["message"]
    assert fake_redis.dbsize() == 0


def test_unknown_platform_names_the_known_ones(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    status, body = run(client, {"platform_id": "nope"})
    assert status == 422
    assert "'demo'" in body["details"]["platform_id"][0]
    assert fake_redis.dbsize() == 0


def test_every_field_error_is_listed_at_once_with_its_path(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    status, body = run(
        client, {"platform_id": "demo", "settings": {"rows": "many", "delay_s": "slow", "colour": 1}, "extra": 1}
    )
    assert status == 422 and body["error"] == "validation_error"
    assert set(body["details"]) == {"settings.rows", "settings.delay_s", "settings.colour", "extra"}
    assert fake_redis.dbsize() == 0


def test_get_needs_a_valid_job_id_and_says_404_for_unknown(client: FlaskClient) -> None:
    assert client.get("/execution/get").status_code == 400
    bad = client.get("/execution/get?job_id=../../etc/passwd")
    assert bad.status_code == 400 and "not a job id" in bad.get_json()["message"]
    assert client.get("/execution/get?job_id=abc123%0A").status_code == 400  # no trailing newline slips through
    missing = client.get("/execution/get?job_id=abc123")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"


def test_unknown_paths_and_methods_answer_json(client: FlaskClient) -> None:
    assert client.get("/nope").get_json()["error"] == "not_found"
    response = client.get("/execution/run")
    assert response.status_code == 405 and response.get_json()["error"] == "method_not_allowed"


def test_oversized_body_is_413(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    body = json.dumps({"platform_id": "demo", "settings": {"x": "a" * (2 * 1024 * 1024)}})
    response = client.post("/execution/run", data=body, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"] == "request_entity_too_large"
    assert fake_redis.dbsize() == 0


def test_redis_down_is_503_with_a_clear_message(unit_config, registry) -> None:
    from collector.app import create_app
    from collector.store.records import connect

    dead = connect("redis://127.0.0.1:1/0")
    app = create_app(unit_config, connection=dead, registry=registry, dashboard=False)
    response = app.test_client().post("/execution/run", json={"platform_id": "demo"})
    assert response.status_code == 503
    assert "unreachable" in response.get_json()["message"]
    alive = app.test_client().post("/system/alive")
    assert alive.status_code == 503 and alive.get_json()["redis"]["ok"] is False


def test_rules_spanning_settings_are_checked_before_queueing(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    status, body = run(client, {"platform_id": "csv_source", "settings": {"path": "a.csv", "url": "http://x/a.csv"}})
    assert status == 422 and "settings" in body["details"]
    assert "path" in body["details"]["settings"][0] and "url" in body["details"]["settings"][0]
    status, body = run(client, {"platform_id": "demo", "settings": {"rows": -1}})
    assert status == 422 and "negative" in body["details"]["settings"][0]
    assert fake_redis.dbsize() == 0


def test_ready_answers_200_while_redis_answers(client: FlaskClient) -> None:
    response = client.get("/system/ready")
    assert response.status_code == 200
    assert response.get_json() == {"ready": True, "version": __version__}


def test_ready_answers_503_with_the_reason_while_redis_is_unreachable_and_a_refused_submit_logs_no_submit(
    unit_config, registry, caplog: pytest.LogCaptureFixture
) -> None:
    from collector.app import create_app
    from collector.store.records import connect

    dead = connect("redis://:hunter2secret@127.0.0.1:1/0")
    client = create_app(unit_config, connection=dead, registry=registry, dashboard=False).test_client()
    response = client.get("/system/ready")
    body = response.get_json()
    assert response.status_code == 503 and body["ready"] is False
    assert "unreachable" in body["reason"] and "COLLECTOR_REDIS_URL" in body["reason"]
    assert "hunter2secret" not in response.get_data(as_text=True)
    assert client.get("/system/alive").status_code == 200  # liveness: the process itself is fine
    with caplog.at_level("INFO"):
        assert client.post("/execution/run", json={"platform_id": "demo"}).status_code == 503
    assert "job submitted" not in caplog.text and "submitted" not in [r.__dict__.get("event") for r in caplog.records]


def test_ready_needs_no_token(unit_config, registry, fake_redis: fakeredis.FakeRedis) -> None:
    import dataclasses

    from collector.app import create_app

    config = dataclasses.replace(unit_config, api_tokens="ops:read:ready-token-0123456789abcdef")
    client = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    assert client.get("/system/ready").status_code == 200
    assert client.post("/system/alive").status_code == 401
