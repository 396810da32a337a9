"""Who may do what: named tokens with scopes, the scope of every route, who acted, and requests other sites send."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import fakeredis
import flask
import pytest
from flask import Flask
from flask.testing import FlaskClient

from collector.api import auth, tokens
from collector.app import create_app
from collector.config import Config
from collector.errors import ConfigError
from collector.masking import mask_text
from collector.specs.registry import Registry
from collector.store.records import JobStore
from tests.unit.conftest import SECRET_KEY as KEY

SECRETS = {name: f"{name}-token-0123456789abcdef" for name in ("reader", "ci", "ops", "root")}
TOKENS = ",".join([f"reader:read:{SECRETS['reader']}", f"ci:submit:{SECRETS['ci']}",
                   f"ops:operate:{SECRETS['ops']}", f"root:admin:{SECRETS['root']}"])
XHR = {"X-Requested-With": "XMLHttpRequest"}
PROTECTED = [
    ("POST", "/system/alive"), ("GET", "/platforms/get"), ("POST", "/execution/run"),
    ("GET", "/execution/get?job_id=abc"), ("GET", "/openapi.json"), ("GET", "/docs"),
    ("GET", "/docs/assets/swagger-ui.css"), ("GET", "/no/such/path"),
]
DEMO = {"platform_id": "demo", "settings": {"rows": 1}}
PROCESS = {"name": "p", "steps": [{"name": "s", "tasks": [{"name": "review", "manual": True}]}]}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def app(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> Flask:
    config = Config(secret_key=unit_config.secret_key, api_tokens=TOKENS)
    return create_app(config, connection=fake_redis, registry=registry, dashboard=False)


@pytest.fixture
def secured(app: Flask) -> FlaskClient:
    return app.test_client()


def queued_job(client: FlaskClient, headers: dict[str, str] | None = None) -> str:
    answer = client.post("/execution/run", json=DEMO, headers=headers or bearer("ci"))
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()["job_id"]


def status(fake_redis: fakeredis.FakeRedis, job_id: str) -> str:
    return fake_redis.hget(f"collector:job:{job_id}", "status").decode()


# -- authentication ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_without_a_token_every_endpoint_answers_401_json(secured: FlaskClient, method: str, path: str) -> None:
    response = secured.open(path, method=method, json={"platform_id": "demo"} if method == "POST" else None)
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"] == "unauthorized" and "COLLECTOR_API_TOKENS" in body["message"]
    challenges = response.headers.getlist("WWW-Authenticate")
    assert challenges[0] == 'Bearer realm="collector"'
    assert ('Basic realm="collector"' in challenges) == path.startswith(("/docs", "/openapi.json"))


@pytest.mark.parametrize("header", [
    "Bearer wrong-token-0123456789abcdef", "Bearer " + SECRETS["ci"][:-1], "Bearer " + SECRETS["ci"] + "x",
    "Bearer ci:submit:" + SECRETS["ci"], "Basic !!!not-base64", "Token " + SECRETS["ci"], "Bearer", "bearer  ",
])
def test_a_wrong_or_malformed_token_is_refused(secured: FlaskClient, header: str, fake_redis: fakeredis.FakeRedis
                                                ) -> None:
    response = secured.post("/execution/run", json=DEMO, headers={"Authorization": header})
    assert response.status_code == 401
    assert fake_redis.dbsize() == 0


def test_liveness_needs_no_token(secured: FlaskClient) -> None:
    assert secured.get("/system/alive").status_code == 200


def test_an_admin_token_opens_every_endpoint(secured: FlaskClient) -> None:
    assert secured.get("/platforms/get", headers=bearer("root")).status_code == 200
    job_id = queued_job(secured, bearer("root"))
    assert secured.post(f"/execution/cancel?job_id={job_id}", headers={**bearer("root"), **XHR}).status_code == 200
    assert secured.post("/schedules", json={"spec": DEMO, "interval_s": 60}, headers=bearer("root")).status_code == 201
    assert secured.get("/openapi.json", headers=bearer("root")).status_code == 200


def test_basic_auth_with_the_token_as_password_opens_browser_pages_only(secured: FlaskClient,
                                                                         fake_redis: fakeredis.FakeRedis) -> None:
    assert secured.get("/docs", headers=basic(SECRETS["reader"])).status_code == 200
    assert secured.get("/openapi.json", headers=basic(SECRETS["reader"])).status_code == 200
    assert secured.get("/docs", headers=basic("not-the-token-at-all!")).status_code == 401
    # The API's own endpoints take bearer tokens only: a browser sends basic auth by itself, to any site that asks.
    refused = secured.get("/execution/list", headers=basic(SECRETS["root"]))
    assert refused.status_code == 401 and "basic auth" in refused.get_json()["message"]
    refused = secured.post("/execution/run", json=DEMO, headers={**basic(SECRETS["root"]), **XHR,
                                                                  "Origin": "http://localhost"})
    assert refused.status_code == 401 and "basic auth" in refused.get_json()["message"]
    assert refused.headers.getlist("WWW-Authenticate") == ['Bearer realm="collector"']
    assert fake_redis.dbsize() == 0


def test_every_token_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    configured = tokens.parse_tokens(TOKENS)
    calls: list[bytes] = []
    real = tokens.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", counting)
    found = tokens.identify(SECRETS["ci"], configured)
    assert found is not None and found.name == "ci"
    assert len(calls) == len(configured)
    calls.clear()
    assert tokens.identify("nope", configured) is None
    assert len(calls) == len(configured)


# -- configuration -------------------------------------------------------------------------------------------------

def test_scopes_imply_lower_ones_and_combine_with_plus() -> None:
    configured = {t.name: t.scopes for t in tokens.parse_tokens(
        f" a:read:{'a' * 16} , b:submit:{'b' * 16}, c:operate+submit:{'c' * 16},d:admin:{'d' * 16}:with:colons")}
    assert configured == {
        "a": {"read"}, "b": {"submit", "read"}, "c": {"operate", "submit", "read"},
        "d": {"read", "submit", "operate", "admin"},
    }
    assert tokens.identify("d" * 16 + ":with:colons", tokens.parse_tokens(f"d:admin:{'d' * 16}:with:colons"))


def test_no_page_or_answer_may_be_framed_by_another_site(secured: FlaskClient, client: FlaskClient) -> None:
    answers = [client.get("/system/alive"), client.get("/ui/"), secured.get("/ui/login"),
               secured.get("/execution/list"), secured.get("/docs", headers=basic(SECRETS["reader"]))]
    for answer in answers:
        assert answer.headers["X-Frame-Options"] == "DENY", answer.request.path
        policy = answer.headers["Content-Security-Policy"]
        assert {"frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'", "form-action 'self'"} == {
            part.strip() for part in policy.split(";")}
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(("raw", "expected"), [
    ("bare-token-0123456789abcdef,another-one-0123456789abcdef", "entry 1 is not name:scopes:token"),
    ("ci:submit:short", "shorter than 16"),
    (f"ci:oprate:{'x' * 20}", "unknown scope 'oprate'"),
    (f"ci:submit+Sup3r:{'x' * 20}", "unknown scope;"),
    (f"ci:submit:{'x' * 20},ci:read:{'y' * 20}", "['ci'] are given more than once"),
    (f"ci:submit:{'x' * 20},ops:read:{'x' * 20}", "the same secret"),
    (f"anonymous:read:{'x' * 20}", "not a token name"),
    (f"a b:read:{'x' * 20}", "the name 'a b' is not a token name"),
])
def test_malformed_token_lists_refuse_to_start_and_never_show_a_secret(
    raw: str, expected: str, fake_redis: fakeredis.FakeRedis, registry: Registry
) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(Config(secret_key=KEY, api_tokens=raw), connection=fake_redis, registry=registry)
    message = caught.value.message
    assert expected in message
    assert "0123456789abcdef" not in message and "x" * 16 not in message and "Sup3r" not in message


def test_a_bare_token_list_is_refused_with_the_new_form(fake_redis: fakeredis.FakeRedis, registry: Registry) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(Config(secret_key=KEY, api_tokens="bare-token-0123456789abcdef"), connection=fake_redis,
                   registry=registry)
    assert "ci:submit:<token>" in caught.value.message and "read, submit, operate, admin" in caught.value.message


def test_the_tokens_file_takes_one_token_a_line(tmp_path: Path, fake_redis: fakeredis.FakeRedis,
                                                registry: Registry) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# who may call the API\nci:submit:{SECRETS['ci']}\n\n  ops:operate:{SECRETS['ops']}  \n")
    app = create_app(Config(secret_key=KEY, api_tokens_file=str(path)), connection=fake_redis, registry=registry,
                     dashboard=False)
    client = app.test_client()
    assert client.post("/execution/run", json=DEMO, headers=bearer("ci")).status_code == 202
    assert client.post("/execution/run", json=DEMO, headers=bearer("ops")).status_code == 403
    path.write_text(f"ci:submit:{SECRETS['ci']}\nbroken-line-0123456789abcdef\n")
    with pytest.raises(ConfigError, match=r"tokens\) line 2 is not name:scopes:token"):
        create_app(Config(secret_key=KEY, api_tokens_file=str(path)), connection=fake_redis, registry=registry)
    with pytest.raises(ConfigError, match="cannot be read"):
        create_app(Config(secret_key=KEY, api_tokens_file=str(tmp_path / "missing")), connection=fake_redis,
                   registry=registry)
    with pytest.raises(ConfigError, match="set one of them"):
        create_app(Config(secret_key=KEY, api_tokens=TOKENS, api_tokens_file=str(path)), connection=fake_redis,
                   registry=registry)


def test_the_tokens_file_is_read_from_the_environment(tmp_path: Path) -> None:
    config = Config.from_env({"COLLECTOR_API_TOKENS_FILE": str(tmp_path / "t")})
    assert config.api_tokens_file == str(tmp_path / "t")


def test_empty_token_list_means_open(fake_redis: fakeredis.FakeRedis, registry: Registry) -> None:
    app = create_app(Config(secret_key=KEY, api_tokens=" , "), connection=fake_redis, registry=registry,
                     dashboard=False)
    assert app.test_client().get("/platforms/get").status_code == 200


# -- scopes --------------------------------------------------------------------------------------------------------

def test_every_route_declares_its_scope_in_one_table(fake_redis: fakeredis.FakeRedis, registry: Registry) -> None:
    app = create_app(Config(secret_key=KEY, redis_url="redis://127.0.0.1:1/0"), connection=fake_redis,
                     registry=registry)
    assert "rq_dashboard" in app.blueprints
    undeclared = [rule.endpoint for rule in app.url_map.iter_rules()
                  if rule.endpoint not in auth.ROUTE_SCOPES and rule.endpoint not in auth.OPEN_ENDPOINTS
                  and not rule.rule.startswith(auth.DASHBOARD + "/")]
    assert undeclared == []
    assert set(auth.ROUTE_SCOPES.values()) <= set(tokens.SCOPES)
    assert auth.required_scope("rq_dashboard.requeue_job_view", "POST", "/rq/job/x/requeue") == "admin"
    assert auth.required_scope("rq_dashboard.list_queues", "GET", "/rq/0/data/queues.json") == "read"


def test_a_read_token_cannot_submit(secured: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    response = secured.post("/execution/run", json=DEMO, headers=bearer("reader"))
    assert response.status_code == 403
    body = response.get_json()
    assert body["error"] == "insufficient_scope" and "'submit'" in body["message"]
    assert body["details"] == {"required_scope": "submit", "token": "reader", "scopes": ["read"]}
    assert 'scope="submit"' in response.headers["WWW-Authenticate"]
    assert SECRETS["reader"] not in response.get_data(as_text=True)
    assert fake_redis.dbsize() == 0
    assert secured.post("/platforms/check", json=DEMO, headers=bearer("reader")).status_code == 403
    assert secured.get("/execution/list", headers=bearer("reader")).status_code == 200


def test_a_submit_token_cannot_cancel(secured: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    job_id = queued_job(secured)
    response = secured.post(f"/execution/cancel?job_id={job_id}", json={}, headers=bearer("ci"))
    assert response.status_code == 403 and response.get_json()["details"]["required_scope"] == "operate"
    assert status(fake_redis, job_id) == "queued"
    assert secured.get(f"/execution/get?job_id={job_id}", headers=bearer("ci")).status_code == 200


def test_an_operate_token_cannot_create_schedules_or_processes(secured: FlaskClient,
                                                               fake_redis: fakeredis.FakeRedis) -> None:
    response = secured.post("/schedules", json={"spec": DEMO, "interval_s": 60}, headers=bearer("ops"))
    assert response.status_code == 403 and response.get_json()["details"]["required_scope"] == "admin"
    response = secured.post("/process/run", json=PROCESS, headers=bearer("ops"))
    assert response.status_code == 403 and "'admin'" in response.get_json()["message"]
    assert secured.post("/execution/run", json=DEMO, headers=bearer("ops")).status_code == 403
    assert fake_redis.dbsize() == 0
    assert secured.get("/schedules", headers=bearer("ops")).status_code == 200


def test_flask_g_caller_is_the_token_name_or_anonymous(app: Flask, fake_redis: fakeredis.FakeRedis,
                                                       registry: Registry) -> None:
    with app.test_client() as client:
        client.post("/execution/run", json=DEMO, headers=bearer("ci"))
        assert flask.g.caller == "ci"
        client.get("/system/alive")
        assert flask.g.caller == "anonymous"
    open_app = create_app(Config(secret_key=KEY), connection=fake_redis, registry=registry, dashboard=False)
    with open_app.test_client() as client:
        client.get("/platforms/get", headers=bearer("root"))
        assert flask.g.caller == "anonymous"


# -- who acted -----------------------------------------------------------------------------------------------------

def test_who_cancels_is_the_token_name_and_what_the_caller_writes_is_the_reason(
    secured: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    job_id = queued_job(secured)
    response = secured.post(f"/execution/cancel?job_id={job_id}", json={"canceled_by": "the CFO"},
                            headers=bearer("ops"))
    assert response.status_code == 200
    record = JobStore(fake_redis, unit_config).read(job_id, "canceled_by", "cancel_reason")
    assert record == {"canceled_by": "ops", "cancel_reason": "the CFO"}
    job_id = queued_job(secured)
    secured.post(f"/execution/cancel?job_id={job_id}&reason=wrong%20dates", headers={**bearer("ops"), **XHR})
    view = secured.get(f"/execution/get?job_id={job_id}", headers=bearer("ops")).get_json()
    assert view["canceled_by"] == "ops" and view["cancel_reason"] == "wrong dates"


def test_a_sign_off_is_recorded_under_the_token_name_not_the_by_of_the_body(secured: FlaskClient) -> None:
    process_id = secured.post("/process/run", json=PROCESS, headers=bearer("root")).get_json()["process_id"]
    response = secured.post(f"/process/ack?process_id={process_id}&task=review",
                            json={"result": "OK", "by": "the CFO", "reason": "totals match"}, headers=bearer("ops"))
    assert response.status_code == 200, response.get_json()
    ack = next(h for h in response.get_json()["history"] if h["event"] == "ack")
    assert ack["by"] == "ops" and ack["note"] == "the CFO" and ack["reason"] == "totals match"
    task = response.get_json()["steps"][0]["tasks"][0]
    assert task["acked_by"] == "ops" and task["note"] == "the CFO"
    both = secured.post(f"/process/ack?process_id={process_id}&task=review",
                        json={"result": "OK", "by": "x", "note": "y"}, headers=bearer("ops"))
    assert both.status_code == 422 and "by" in both.get_json()["details"]


def test_who_resumes_is_the_token_name(secured: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                       registry: Registry) -> None:
    from collector.store.records import JobStore as Store
    from collector.workflows.waiting import suspend

    job_id = queued_job(secured)
    wait = {"kind": "input", "name": "signin", "prompt": "sign in", "timeout_s": 60}
    assert suspend(fake_redis, Store(fake_redis, unit_config), job_id, wait, {}) == "waiting"
    # What resumes the job (its token, its callback link, which needs no API token) shows only to a token that may
    # resume it: `operate`.
    for name in ("reader", "ci"):
        shown = secured.get(f"/execution/get?job_id={job_id}", headers=bearer(name)).get_json()["waiting"]
        assert "resume_token" not in shown and "callback" not in shown and "'operate'" in shown["resume"], shown
    shown = secured.get(f"/execution/get?job_id={job_id}", headers=bearer("ops")).get_json()["waiting"]
    token = shown["resume_token"]
    assert shown["callback"].startswith("/execution/callback?token=")
    body = {"token": token, "input": {"code": "c"}}
    assert secured.post(f"/execution/resume?job_id={job_id}", json=body, headers=bearer("ci")).status_code == 403
    answer = secured.post(f"/execution/resume?job_id={job_id}", json=body, headers=bearer("ops"))
    assert answer.status_code == 202 and answer.get_json()["resumed_by"] == "ops"
    assert Store(fake_redis, unit_config).read(job_id, "resumed_by") == {"resumed_by": "ops"}
    events = secured.get(f"/execution/events?job_id={job_id}", headers=bearer("ops")).get_json()
    assert events[-1]["type"] == "resumed" and events[-1]["by"] == "ops"


def test_in_open_mode_the_actor_is_anonymous(client: FlaskClient) -> None:
    job_id = client.post("/execution/run", json=DEMO).get_json()["job_id"]
    answer = client.post(f"/execution/cancel?job_id={job_id}", json={"canceled_by": "alice"})
    assert answer.get_json()["canceled_by"] == "anonymous" and answer.get_json()["cancel_reason"] == "alice"


# -- requests other sites send -------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", [
    {"content_type": "application/x-www-form-urlencoded", "data": "canceled_by=mallory"},
    {"content_type": "text/plain", "data": '{"canceled_by": "mallory"}'},
    {"content_type": "multipart/form-data", "data": {"x": "1"}},
    {"content_type": "application/x-www-form-urlencoded", "data": ""},  # a form with no fields
    {"content_type": "text/plain", "data": ""},
    {},
])
def test_a_cross_site_form_cannot_cancel_in_open_mode(client: FlaskClient, fake_redis: fakeredis.FakeRedis,
                                                      form: dict) -> None:
    job_id = client.post("/execution/run", json=DEMO).get_json()["job_id"]
    for headers in ({}, {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = client.post(f"/execution/cancel?job_id={job_id}", headers=headers, **form)
        assert response.status_code in (400, 403), response.get_json()
        assert status(fake_redis, job_id) == "queued"
    response = client.post(f"/execution/cancel?job_id={job_id}", **form)
    assert response.status_code == 400 and "X-Requested-With" in response.get_json()["message"]
    response = client.post(f"/execution/cancel?job_id={job_id}", headers={"Origin": "https://evil.example"}, **form)
    assert response.status_code == 403 and response.get_json()["error"] == "cross_site_request"


def test_a_cross_site_form_cannot_cancel_through_a_logged_in_browser(secured: FlaskClient,
                                                                     fake_redis: fakeredis.FakeRedis) -> None:
    job_id = queued_job(secured)
    for form in ({"content_type": "application/x-www-form-urlencoded", "data": "a=1"},
                 {"content_type": "application/x-www-form-urlencoded", "data": ""}, {}):
        for headers in ({}, {"Origin": "https://evil.example"}):
            response = secured.post(f"/execution/cancel?job_id={job_id}", headers={**basic(SECRETS["root"]),
                                                                                     **headers}, **form)
            assert response.status_code == 401, response.get_json()
    assert status(fake_redis, job_id) == "queued"


def test_a_foreign_origin_is_refused_even_with_json_and_a_bearer_token(secured: FlaskClient,
                                                                       fake_redis: fakeredis.FakeRedis) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://localhost.evil.example"}, {"Origin": "http://localhost:9999"}):
        response = secured.post("/execution/run", json=DEMO, headers={**bearer("ci"), **headers})
        assert response.status_code == 403 and response.get_json()["error"] == "cross_site_request", headers
    assert fake_redis.dbsize() == 0
    # The service's own pages (the test client's host is localhost) and clients that send no Origin are fine.
    for headers in ({"Origin": "http://localhost"}, {"Origin": "https://LOCALHOST:443"},
                    {"Sec-Fetch-Site": "same-origin"}, {}):
        assert secured.post("/execution/run", json=DEMO, headers={**bearer("ci"), **headers}).status_code == 202
    ipv6 = {"Host": "[::1]:8000", "Origin": "http://[::1]:8000"}
    assert secured.post("/execution/run", json=DEMO, headers={**bearer("ci"), **ipv6}).status_code == 202
    moved = {"Host": "[::1]:8000", "Origin": "http://[::1]:8001"}
    assert secured.post("/execution/run", json=DEMO, headers={**bearer("ci"), **moved}).status_code == 403


def test_a_body_less_post_needs_the_custom_header_and_a_json_one_does_not(secured: FlaskClient) -> None:
    job_id = queued_job(secured)
    refused = secured.post(f"/execution/cancel?job_id={job_id}", headers=bearer("ops"))
    assert refused.status_code == 400 and "X-Requested-With" in refused.get_json()["message"]
    assert secured.post(f"/execution/cancel?job_id={job_id}", headers={**bearer("ops"), **XHR}).status_code == 200
    job_id = queued_job(secured)
    assert secured.post(f"/execution/cancel?job_id={job_id}", json={}, headers=bearer("ops")).status_code == 200
    # POST /system/alive changes nothing: monitoring scripts post it bare.
    assert secured.post("/system/alive", headers=bearer("reader")).status_code == 200


# -- tokens in URLs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["token", "access_token", "api_token", "Token", "api_key"])
def test_a_token_in_the_query_string_is_refused(secured: FlaskClient, name: str) -> None:
    response = secured.get(f"/execution/list?{name}={SECRETS['root']}")
    assert response.status_code == 400 and name in response.get_json()["message"]
    assert "Authorization: Bearer" in response.get_json()["message"]
    assert SECRETS["root"] not in response.get_data(as_text=True)
    assert secured.get(f"/execution/list?{name}={SECRETS['root']}", headers=bearer("root")).status_code == 400
    assert secured.get(f"/system/alive?{name}=x").status_code == 400


def test_other_parameters_named_like_tokens_are_left_alone(secured: FlaskClient) -> None:
    # A resume callback may one day carry its own single-use `resume_token` in the URL.
    assert secured.get("/execution/list?resume_token=abc", headers=bearer("reader")).status_code == 200


def test_tokens_in_urls_are_masked_in_log_lines() -> None:
    line = f'"GET /execution/list?limit=1&token={SECRETS["root"]}&x=1 HTTP/1.1" 400'
    assert mask_text(line) == '"GET /execution/list?limit=1&token=***&x=1 HTTP/1.1" 400'
    assert mask_text("/a?access_token=abc#frag") == "/a?access_token=***#frag"
    assert mask_text("/a?resume_token=abc") == "/a?resume_token=abc"


# -- start-up notes ------------------------------------------------------------------------------------------------

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
        assert "tokens required" in warn_if_open(Config(api_tokens=TOKENS), "0.0.0.0")
        assert "/system/ready and /execution/callback" in warn_if_open(Config(api_tokens=TOKENS), "0.0.0.0")
        assert "tokens required" in warn_if_open(Config(api_tokens_file="/etc/collector/tokens"), "0.0.0.0")
    loud = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(loud) == 1 and "0.0.0.0" in loud[0].getMessage()


@pytest.mark.parametrize(("host", "answered"), [
    ("127.0.0.1:8000", True), ("localhost:8000", True), ("localhost", True), ("[::1]:8000", True),
    ("app.localhost:8000", True), ("127.0.0.2", True), ("LOCALHOST.:8000", True),
    ("rebind.attacker.test:8000", False), ("10.0.0.5:8000", False), ("[fe80::1]:8000", False),
    ("127.0.0.1.attacker.test", False),
])
def test_an_open_api_on_loopback_answers_only_requests_addressed_to_loopback(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, host: str, answered: bool
) -> None:
    """A page of another site that points a name of its own at 127.0.0.1 (DNS rebinding) sends its own name as
    Host, and an Origin that matches it: an open API served on loopback refuses it before anything runs."""
    app = create_app(unit_config, connection=fake_redis, registry=registry, dashboard=False)
    auth.served_on(app, "127.0.0.1")
    origin = f"http://{host}"
    response = app.test_client().post("/execution/run", json={"platform_id": "demo", "settings": {"rows": 1}},
                                      headers={"Host": host, "Origin": origin})
    if answered:
        assert response.status_code == 202, response.get_json()
    else:
        assert response.status_code == 403 and response.get_json()["error"] == "cross_site_request"
        assert "localhost" in response.get_json()["message"]
        assert app.test_client().get("/execution/list", headers={"Host": host}).status_code == 403
        assert fake_redis.llen("rq:queue:collector") == 0


def test_the_host_is_not_checked_when_tokens_guard_the_api_or_it_is_served_to_the_network(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    open_to_network = create_app(unit_config, connection=fake_redis, registry=registry, dashboard=False)
    auth.served_on(open_to_network, "0.0.0.0")
    assert open_to_network.test_client().get("/execution/list", headers={"Host": "api:8000"}).status_code == 200
    guarded = create_app(dataclasses.replace(unit_config, api_tokens=TOKENS), connection=fake_redis,
                         registry=registry, dashboard=False)
    auth.served_on(guarded, "127.0.0.1")
    answer = guarded.test_client().get("/execution/list", headers={"Host": "api.example:8000",
                                                                    "Authorization": f"Bearer {SECRETS['reader']}"})
    assert answer.status_code == 200
