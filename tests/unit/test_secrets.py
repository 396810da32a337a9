"""Secrets of platforms and of storage backends: marked, sealed, masked in answers and logs, required key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import fakeredis
import pytest

import storage
from collector.app import create_app
from collector.config import Config
from collector.errors import ConfigError, ValidationError
from collector.masking import forget, install_log_masking, mask_error, mask_text, remember
from collector.run.runner import Runtime, execute
from collector.sealing import Sealer
from collector.specs.registry import Registry
from collector.specs.schema import storage_backends
from collector.specs.secrets import platforms_with_secrets, require_secret_key
from collector.submit.submitter import Submitter
from tests.secret_platforms import LEAKY, VAULTED, VaultStorage, install_vault, make_package
from tests.unit.conftest import SECRET_KEY as KEY

API_KEY, DB_PASSWORD = "api-key-3f9a1c0d2b", "db-pw-77e1c2d9aa"


@pytest.fixture
def secret_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Registry:
    install_vault(monkeypatch, request)
    monkeypatch.syspath_prepend(str(tmp_path))
    return Registry.discover(make_package(tmp_path, "vaultplatforms", vaulted=VAULTED, leaky=LEAKY))


def spec(password: str = DB_PASSWORD) -> dict[str, Any]:
    return {"platform_id": "vaulted", "settings": {
        "api_key": API_KEY, "expect": hashlib.sha256(API_KEY.encode()).hexdigest(),
        "storage": {"type": "vault", "settings": {"url": "vault://host/db", "password": password}},
    }}


def test_platforms_get_marks_platform_and_backend_secrets(secret_registry: Registry) -> None:
    vaulted = secret_registry.get("vaulted")
    assert vaulted is not None
    described = {s["name"]: s for s in vaulted.describe()["settings"]}
    assert described["api_key"]["secret"] is True and described["expect"]["secret"] is False
    backend = {s["name"]: s for s in described["storage"]["backends"]["vault"]}
    assert backend["password"]["secret"] is True and backend["url"]["secret"] is False


def test_backend_secrets_are_sealed_and_masked_in_the_record(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    app = create_app(unit_config, connection=fake_redis, registry=secret_registry, dashboard=False)
    client = app.test_client()
    response = client.post("/execution/run", json=spec())
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    view = client.get(f"/execution/get?job_id={job_id}").get_json()
    assert view["settings"]["api_key"] == "***"
    assert view["settings"]["storage"]["settings"] == {"url": "vault://host/db", "password": "***"}
    raw = b"".join(k + v for k, v in fake_redis.hgetall(f"collector:job:{job_id}").items())
    assert API_KEY.encode() not in raw and DB_PASSWORD.encode() not in raw
    sealed = fake_redis.hget(f"collector:job:{job_id}", "secrets")
    assert Sealer(unit_config.secret_key or "").unseal(sealed.decode()) == {
        "api_key": API_KEY, "storage.settings.password": DB_PASSWORD,
    }


def test_the_worker_unseals_backend_secrets_in_memory(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=secret_registry).submit(spec())["job_id"]
    assert execute(job_id, Runtime(unit_config, fake_redis, secret_registry)) == {"stored": 1}
    assert VaultStorage.written == [(DB_PASSWORD, [{"key_length": len(API_KEY)}])]


def test_a_validation_error_quoting_a_secret_is_masked(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    client = create_app(unit_config, connection=fake_redis, registry=secret_registry, dashboard=False).test_client()
    bad = spec(password="bad-" + DB_PASSWORD)
    for path, body in (("/execution/run", bad), ("/schedules", {"spec": bad, "interval_s": 60}),
                       ("/process/run", {"name": "p", "steps": [{"name": "s", "tasks": [{"name": "t", **bad}]}]})):
        response = client.post(path, json=body)
        assert response.status_code == 422, (path, response.get_json())
        text = response.get_data(as_text=True)
        assert DB_PASSWORD not in text and "as ***" in text, (path, text)
    assert fake_redis.dbsize() == 0


def test_serve_refuses_to_start_without_a_key_when_a_platform_has_secrets(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis
) -> None:
    assert platforms_with_secrets(secret_registry) == ["leaky", "vaulted"]
    with pytest.raises(ConfigError, match=r"COLLECTOR_SECRET_KEY is not set.*leaky, vaulted"):
        create_app(Config(), connection=fake_redis, registry=secret_registry)


def test_a_storage_setting_needs_the_key_only_if_some_backend_has_secrets(
    secret_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    vaulted = secret_registry.get("vaulted")
    assert vaulted is not None
    no_api_key = dataclasses.replace(vaulted, settings=dataclasses.replace(
        vaulted.settings, settings=tuple(s for s in vaulted.settings.settings if s.name != "api_key")))
    only_storage = dataclasses.replace(secret_registry, platforms={"vaulted": no_api_key})
    assert platforms_with_secrets(only_storage) == ["vaulted"]
    monkeypatch.setattr(storage, "backends", lambda: {})
    storage_backends.cache_clear()
    assert platforms_with_secrets(only_storage) == []
    require_secret_key(Config(), only_storage, process="API")  # no secrets anywhere: starts without a key


def test_the_shipped_platforms_with_secrets_need_a_key(registry: Registry, fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(Config(), connection=fake_redis, registry=registry, dashboard=False)
    for platform_id in ("http_json", "sql_query"):
        assert platform_id in caught.value.message
    require_secret_key(Config(secret_key=KEY), registry, process="API")
    assert create_app(Config(secret_key=KEY), connection=fake_redis, registry=registry, dashboard=False)


@pytest.mark.parametrize("secret", ["plain-secret-1", "p@ss/w:rd&x=y", 'quo"te\\back'])
def test_mask_text_catches_encoded_forms(secret: str) -> None:
    from urllib.parse import quote, quote_plus

    text = f"a={secret} b={quote(secret, safe='')} c={quote_plus(secret)} d={json.dumps(secret)} e={secret!r}"
    masked = mask_text(text, [secret])
    for form in (secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]):
        assert form not in masked


def test_mask_text_catches_urls_and_auth_headers_without_knowing_the_secret() -> None:
    text = "mysql+pymysql://root:hunter2@db/x {'Authorization': 'Bearer abc.def'} Authorization: Basic Zm9vOmJhcg=="
    masked = mask_text(text)
    assert "hunter2" not in masked and "abc.def" not in masked and "Zm9vOmJhcg" not in masked
    assert "root:***@db" in masked


def test_every_log_record_is_masked_while_a_job_runs(caplog: pytest.LogCaptureFixture) -> None:
    install_log_masking()
    secret = "running-job-secret-42"
    logger = logging.getLogger("some.library")
    active = remember([secret])
    try:
        with caplog.at_level(logging.INFO, logger="some.library"):
            logger.info("connecting with %s", secret)
            try:
                raise RuntimeError(f"refused {secret}")
            except RuntimeError:
                logger.exception("failed")
    finally:
        forget(active)
    with caplog.at_level(logging.INFO, logger="some.library"):
        logger.info("after the job: %s", "no longer masked")
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert secret not in text and "connecting with ***" in text and "refused ***" in text
    assert "no longer masked" in text


def test_mask_error_masks_message_and_details() -> None:
    exc = mask_error(ValidationError("bad s3cr3t-value", details={"a": ["s3cr3t-value!"]}), ["s3cr3t-value"])
    assert exc.to_dict()["message"] == "bad ***" and exc.details == {"a": ["***!"]}


def test_an_unexpected_submit_failure_is_logged_without_the_secret(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    install_log_masking()

    def broken(self: Submitter, body: Any, **_: Any) -> None:
        raise RuntimeError(f"boom while sealing {body['settings']['api_key']}")

    monkeypatch.setattr(Submitter, "submit", broken)
    client = create_app(unit_config, connection=fake_redis, registry=secret_registry, dashboard=False).test_client()
    with caplog.at_level(logging.ERROR):
        response = client.post("/execution/run", json=spec())
    assert response.status_code == 500 and response.get_json()["error"] == "internal_error"
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "boom while sealing ***" in logged and API_KEY not in logged
    assert API_KEY not in response.get_data(as_text=True)


def test_openapi_describes_storage_backends_with_their_secrets(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    import jsonschema_rs

    client = create_app(unit_config, connection=fake_redis, registry=secret_registry, dashboard=False).test_client()
    doc = client.get("/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    vault = schemas["Storage_vault"]
    assert vault["properties"]["password"]["writeOnly"] is True and vault["additionalProperties"] is False
    variants = schemas["Settings_vaulted"]["properties"]["storage"]["oneOf"]
    assert {"type": "null"} in variants
    assert any(v.get("properties", {}).get("type", {}).get("const") == "vault" for v in variants)
    request = {"$ref": "#/components/schemas/RunRequest_vaulted", "components": doc["components"]}
    validator = jsonschema_rs.validator_for(request)
    assert validator.is_valid(spec())
    wrong = spec()
    wrong["settings"]["storage"]["settings"]["port"] = 1
    assert not validator.is_valid(wrong)
    assert client.post("/execution/run", json=wrong).status_code == 422


@pytest.mark.parametrize("kind", [{}, [], ["vault"], 1, None, True])
def test_a_storage_type_that_is_not_a_string_is_a_422(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config, kind: Any
) -> None:
    client = create_app(unit_config, connection=fake_redis, registry=secret_registry, dashboard=False).test_client()
    body = spec()
    body["settings"]["storage"]["type"] = kind
    response = client.post("/execution/run", json=body)
    assert response.status_code == 422 and "settings.storage.type" in response.get_json()["details"]
    assert fake_redis.dbsize() == 0


def test_a_failing_backend_leaks_no_secret_into_the_record(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    from collector.errors import JobFailedError

    body = spec()
    body["settings"]["storage"]["settings"]["table"] = "boom"
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=secret_registry).submit(body)["job_id"]
    with pytest.raises(JobFailedError) as raised:
        execute(job_id, Runtime(unit_config, fake_redis, secret_registry))
    assert DB_PASSWORD not in str(raised.value) and "failed (***)" in str(raised.value)
    everything = b"".join(k + v for k, v in fake_redis.hgetall(f"collector:job:{job_id}").items())
    assert b"ConnectionError" in everything and b"vault://admin:***@" in everything
    assert DB_PASSWORD.encode() not in everything and API_KEY.encode() not in everything


@pytest.mark.parametrize("key", ["kq", "change-me", "x" * 31, "é" * 15])
def test_a_short_key_is_refused_at_start_with_the_reason(key: str, registry: Registry,
                                                         fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ConfigError, match=r"COLLECTOR_SECRET_KEY is \d+ bytes long; it must be at least 32") as caught:
        create_app(Config(secret_key=key), connection=fake_redis, registry=registry, dashboard=False)
    assert key not in caught.value.message.replace("COLLECTOR_SECRET_KEY", "")
    assert fake_redis.dbsize() == 0


def test_a_key_of_32_bytes_starts(registry: Registry, fake_redis: fakeredis.FakeRedis) -> None:
    app = create_app(Config(secret_key="é" * 16), connection=fake_redis, registry=registry, dashboard=False)
    assert app.test_client().get("/system/alive").status_code == 200


@pytest.mark.parametrize("raised", [ValidationError, RuntimeError])
def test_a_failed_tick_never_shows_the_schedules_secrets(
    secret_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raised: type[Exception],
) -> None:
    """A tick's spec is checked again with its secrets unsealed; what it says when that fails (a platform's own
    check may quote a value) is kept on the schedule and logged, with those values masked."""
    from collector.workflows.schedules import Schedules

    install_log_masking()
    submitter = Submitter(connection=fake_redis, config=unit_config, registry=secret_registry)
    schedules = Schedules(submitter)
    made = schedules.create({"spec": spec(), "interval_s": 60}, now=1_700_000_000.0)

    def refuse(body: dict[str, Any], **_: Any) -> None:
        quoted = f"the vault refused api_key {body['settings']['api_key']} and password " \
                 f"{body['settings']['storage']['settings']['password']}"
        raise raised(quoted) if raised is RuntimeError else ValidationError(quoted, details={"api_key": [quoted]})

    monkeypatch.setattr(submitter, "submit", refuse)
    with caplog.at_level(logging.INFO):
        assert schedules.fire_due(now=1_700_000_061.0) == []
    error = schedules.get(made["id"])["last_error"]
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for where in (json.dumps(error), logged, json.dumps({k.decode(): v.decode() for k, v in
                                                         fake_redis.hgetall(f"collector:schedule:{made['id']}").items()})):
        assert API_KEY not in where and DB_PASSWORD not in where
    if raised is RuntimeError:
        assert error["message"] == "the tick failed unexpectedly (RuntimeError); the logs have the details"
        assert "the vault refused api_key" in logged, "the log keeps the text, masked"
    else:
        assert error["message"].startswith("the vault refused api_key ") and error["details"]["api_key"]
