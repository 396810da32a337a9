"""Bearer tokens: every endpoint but GET /system/alive needs one, compared in constant time; 401 is JSON."""

from __future__ import annotations

import base64

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector.api import auth
from collector.app import create_app
from collector.config import Config
from collector.errors import ConfigError
from collector.specs.registry import Registry

TOKENS = ("first-token-0123456789abcdef", "second-token-0123456789abcdef")
PROTECTED = [
    ("POST", "/system/alive"), ("GET", "/platforms/get"), ("POST", "/execution/run"),
    ("GET", "/execution/get?job_id=abc"), ("GET", "/openapi.json"), ("GET", "/docs"),
    ("GET", "/docs/assets/swagger-ui.css"), ("GET", "/no/such/path"),
]


@pytest.fixture
def secured(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> FlaskClient:
    config = Config(secret_key=unit_config.secret_key, api_tokens=" , ".join(TOKENS))
    return create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_without_a_token_every_endpoint_answers_401_json(secured: FlaskClient, method: str, path: str) -> None:
    response = secured.open(path, method=method, json={"platform_id": "demo"} if method == "POST" else None)
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"] == "unauthorized" and "COLLECTOR_API_TOKENS" in body["message"]
    challenges = response.headers.getlist("WWW-Authenticate")
    assert challenges[0] == 'Bearer realm="collector"'
    assert ('Basic realm="collector"' in challenges) == path.startswith("/docs")


@pytest.mark.parametrize("header", [
    "Bearer wrong-token-0123456789abcdef", "Bearer " + TOKENS[0][:-1], "Bearer " + TOKENS[0] + "x",
    "Basic !!!not-base64", "Token " + TOKENS[0], "Bearer", "bearer  ",
])
def test_a_wrong_or_malformed_token_is_refused(secured: FlaskClient, header: str, fake_redis: fakeredis.FakeRedis
                                                ) -> None:
    response = secured.post("/execution/run", json={"platform_id": "demo"}, headers={"Authorization": header})
    assert response.status_code == 401
    assert fake_redis.dbsize() == 0


def test_liveness_needs_no_token(secured: FlaskClient) -> None:
    assert secured.get("/system/alive").status_code == 200


@pytest.mark.parametrize("token", TOKENS)
def test_any_configured_token_opens_every_endpoint(secured: FlaskClient, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    assert secured.get("/platforms/get", headers=headers).status_code == 200
    response = secured.post("/execution/run", json={"platform_id": "demo"}, headers=headers)
    assert response.status_code == 202
    assert secured.get("/openapi.json", headers=headers).status_code == 200


def test_basic_auth_with_the_token_as_password_opens_browser_pages(secured: FlaskClient) -> None:
    assert secured.get("/docs", headers=basic(TOKENS[1])).status_code == 200
    assert secured.get("/docs", headers=basic("not-the-token-at-all!")).status_code == 401


def test_every_token_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert auth.token_matches(TOKENS[0], TOKENS) is True
    assert len(calls) == len(TOKENS)
    calls.clear()
    assert auth.token_matches("nope", TOKENS) is False
    assert len(calls) == len(TOKENS)


def test_short_tokens_refuse_to_start(fake_redis: fakeredis.FakeRedis, registry: Registry) -> None:
    with pytest.raises(ConfigError, match="shorter than 16"):
        create_app(Config(secret_key="k", api_tokens="short"), connection=fake_redis, registry=registry)


def test_empty_token_list_means_open(fake_redis: fakeredis.FakeRedis, registry: Registry) -> None:
    app = create_app(Config(secret_key="k", api_tokens=" , "), connection=fake_redis, registry=registry,
                     dashboard=False)
    assert app.test_client().get("/platforms/get").status_code == 200


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.org", False),
])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert auth.is_loopback(host) is loopback


def test_serve_warns_loudly_on_a_public_address_without_tokens(caplog: pytest.LogCaptureFixture) -> None:
    from collector.cli.main import warn_if_open

    with caplog.at_level("INFO", logger="collector"):
        assert "only this machine" in warn_if_open(Config(), "127.0.0.1")
        assert "OPEN TO THE NETWORK" in warn_if_open(Config(), "0.0.0.0")
        assert "tokens required" in warn_if_open(Config(api_tokens=TOKENS[0]), "0.0.0.0")
    loud = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(loud) == 1 and "0.0.0.0" in loud[0].getMessage()
