"""The OpenAPI 3.1 document: every endpoint, every platform's settings, secrets marked, agrees with validation."""

from __future__ import annotations

import re
from typing import Any

import fakeredis
import jsonschema_rs
import pytest
from flask.testing import FlaskClient

from collector.app import create_app
from collector.config import Config
from collector.specs.registry import Registry
from tests.unit.conftest import SECRET_KEY as KEY

# Routes that are not the API's own: static files of the docs page and of the dashboard, the console's pages.
UNDOCUMENTED = re.compile(r"^/(docs/assets/|rq/|ui/.)")


def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def matches(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> bool:
    """Whether `instance` validates against `schema`, with `#/components/...` references resolved in `doc`."""
    return jsonschema_rs.validator_for({**schema, "components": doc["components"]}).is_valid(instance)


def run_schema(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["paths"]["/execution/run"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_it_is_openapi_3_1_and_documents_every_route(client: FlaskClient) -> None:
    doc = document(client)
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] == "collector"
    rules = client.application.url_map.iter_rules()
    routes = {(method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
              for rule in rules for method in rule.methods - {"HEAD", "OPTIONS"}
              if not UNDOCUMENTED.match(rule.rule) and rule.endpoint != "static"}
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert routes - documented == set(), "endpoints missing from /openapi.json"
    assert documented - routes == set(), "documented endpoints the app does not have"


def test_every_platform_has_its_settings_schema_and_a_discriminated_request(
    client: FlaskClient, registry: Registry
) -> None:
    doc = document(client)
    schema = run_schema(doc)
    assert schema["discriminator"]["propertyName"] == "platform_id"
    assert set(schema["discriminator"]["mapping"]) == set(registry.platforms)
    for platform_id, platform in registry.platforms.items():
        settings = doc["components"]["schemas"][f"Settings_{platform_id}"]
        assert set(settings["properties"]) == {s.name for s in platform.settings.settings}
        assert settings["additionalProperties"] is False


@pytest.mark.parametrize(("body", "status"), [
    ({"platform_id": "demo"}, 202),
    ({"_id": "ref-1", "platform_id": "demo", "settings": {"rows": 3, "delay_s": 0.5, "fail_at": None}}, 202),
    ({"_id": 7, "platform_id": "demo", "settings": {}}, 202),
    ({"platform_id": "demo", "settings": {"rows": "3"}}, 422),
    ({"platform_id": "demo", "settings": {"rows": 1.5}}, 422),
    ({"platform_id": "demo", "settings": {"colour": "red"}}, 422),
    ({"platform_id": "demo", "priority": 1}, 422),
    ({"platform_id": "nope"}, 422),
    ({"settings": {}}, 422),
])
def test_the_document_and_the_validation_agree(client: FlaskClient, body: dict[str, Any], status: int) -> None:
    doc = document(client)
    assert matches(doc, run_schema(doc), body) is (status == 202)
    response = client.post("/execution/run", json=body)
    assert response.status_code == status
    answer = doc["paths"]["/execution/run"]["post"]["responses"][str(status)]["content"]["application/json"]
    assert matches(doc, answer["schema"], response.get_json())


def test_answers_match_their_documented_schemas(client: FlaskClient) -> None:
    doc = document(client)
    job_id = client.post("/execution/run", json={"platform_id": "demo"}).get_json()["job_id"]
    for method, path, status in [
        ("get", "/system/alive", 200), ("get", "/system/ready", 200), ("post", "/system/alive", 200),
        ("get", "/platforms/get", 200),
        ("get", f"/execution/get?job_id={job_id}", 200), ("get", "/execution/get?job_id=nope", 404),
        ("get", "/execution/get?job_id=a:b", 400), ("get", "/openapi.json", 200),
    ]:
        response = client.open(path, method=method.upper())
        assert response.status_code == status, path
        operation = doc["paths"][path.split("?")[0]][method]
        schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        assert matches(doc, schema, response.get_json()), path


def test_the_other_endpoints_answer_as_documented(client: FlaskClient) -> None:
    doc = document(client)
    job_id = client.post("/execution/run", json={"platform_id": "demo"}).get_json()["job_id"]
    process = {"name": "p", "steps": [{"name": "s", "tasks": [{"name": "t", "manual": True}]}]}
    process_id = client.post("/process/run", json=process).get_json()["process_id"]
    schedule_id = client.post("/schedules", json={"spec": {"platform_id": "demo"}, "interval_s": 60}).get_json()["id"]
    for method, path, body, status, media in [
        ("get", f"/execution/events?job_id={job_id}", None, 200, "application/json"),
        ("post", f"/execution/resume?job_id={job_id}", {"token": "t", "input": {}}, 409, "application/json"),
        ("post", "/execution/resume?job_id=nope", {"token": "t"}, 404, "application/json"),
        ("get", "/execution/list?limit=1", None, 200, "application/json"),
        ("get", "/execution/list?limit=", None, 400, "application/json"),
        ("get", f"/process/get?process_id={process_id}", None, 200, "application/json"),
        ("post", f"/process/ack?process_id={process_id}&task=t", {"result": "OK", "by": "ann"}, 200,
         "application/json"),
        ("post", f"/process/rerun?process_id={process_id}&task=t", None, 409, "application/json"),
        ("get", "/schedules", None, 200, "application/json"),
        ("get", f"/schedules/{schedule_id}", None, 200, "application/json"),
        ("post", "/schedules", {"spec": {"platform_id": "demo"}, "cron": "0 0 30 2 *"}, 422, "application/json"),
        ("delete", f"/schedules/{schedule_id}", None, 200, "application/json"),
        ("get", f"/schedules/{schedule_id}", None, 404, "application/json"),
        ("post", f"/execution/cancel?job_id={job_id}", None, 200, "application/json"),
        ("post", f"/execution/cancel?job_id={job_id}", None, 409, "application/json"),
        ("get", "/metrics", None, 200, "text/plain"),
    ]:
        response = client.open(path, method=method.upper(), json=body, headers={"X-Requested-With": "test"})
        assert response.status_code == status, (path, response.get_data(as_text=True))
        route = re.sub(r"/schedules/[^?]+", "/schedules/{schedule_id}", path.split("?")[0])
        content = doc["paths"][route][method]["responses"][str(status)]["content"]
        assert response.mimetype in content, (path, response.mimetype)
        if media == "application/json":
            assert matches(doc, content[media]["schema"], response.get_json()), path


def test_secret_settings_are_write_only_without_defaults(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.secret_platforms import LEAKY, make_package

    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.discover(make_package(tmp_path, "openapiplatforms", leaky=LEAKY))
    app = create_app(Config(secret_key=KEY), connection=fakeredis.FakeRedis(), registry=registry, dashboard=False)
    settings = document(app.test_client())["components"]["schemas"]["Settings_leaky"]["properties"]
    for name in ("password", "token"):
        assert settings[name]["format"] == "password" and settings[name]["writeOnly"] is True
        assert settings[name]["x-secret"] is True and "default" not in settings[name]
    assert settings["outcome"]["enum"] == ["succeed", "fail", "crash"]


def test_with_tokens_every_operation_but_liveness_documents_401_and_its_scope(fake_redis: fakeredis.FakeRedis,
                                                                               registry: Registry) -> None:
    token = "openapi-token-0123456789abcdef"
    app = create_app(Config(secret_key=KEY, api_tokens=f"docs:read:{token}"), connection=fake_redis,
                     registry=registry, dashboard=False)
    client = app.test_client()
    assert client.get("/openapi.json").status_code == 401
    doc = client.get("/openapi.json", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            secured = (method, path) not in {("get", "/system/alive"), ("get", "/system/ready"),
                                              ("get", "/execution/callback")}
            assert ("401" in operation["responses"]) is secured, (method, path)
            # the callback link needs no API token; its 403 is a wrong or used resume token
            assert ("403" in operation["responses"]) is (secured or path == "/execution/callback"), (method, path)
            if secured:
                assert operation["security"][0] == {"bearer": [operation["x-scope"]]}, (method, path)
                assert operation["x-scope"] in operation["responses"]["403"]["description"]
    scopes = {(method, path): op.get("x-scope") for path, ops in doc["paths"].items() for method, op in ops.items()}
    assert scopes[("post", "/execution/run")] == "submit" and scopes[("post", "/execution/cancel")] == "operate"
    assert scopes[("post", "/schedules")] == "admin" and scopes[("get", "/execution/get")] == "read"
    assert {"basic": ["read"]} in doc["paths"]["/docs"]["get"]["security"]
    assert "basic" not in str(doc["paths"]["/execution/run"]["post"]["security"])


def test_open_mode_documents_the_cross_site_refusal_of_state_changing_operations(client: FlaskClient) -> None:
    doc = document(client)
    assert "Origin" in doc["paths"]["/execution/cancel"]["post"]["responses"]["403"]["description"]
    assert "X-Requested-With" in doc["paths"]["/execution/cancel"]["post"]["responses"]["400"]["description"]
    assert "403" not in doc["paths"]["/execution/get"]["get"]["responses"]
    assert "security" not in doc


def test_the_docs_page_loads_nothing_from_outside(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "//" not in re.sub(r"<!DOCTYPE[^>]*>", "", html).replace("://", "")  # no external or protocol URLs
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "docs/assets/swagger-ui-bundle.js" in assets
    for asset in assets:
        with client.get("/" + asset) as response:
            assert response.status_code == 200 and len(response.data) > 100, asset
    assert "openapi.json" in html


def descriptions(node: Any) -> list[str]:
    """Every `description` text anywhere in the document."""
    if isinstance(node, dict):
        own = [node["description"]] if isinstance(node.get("description"), str) else []
        return own + [text for value in node.values() for text in descriptions(value)]
    if isinstance(node, list):
        return [text for value in node for text in descriptions(value)]
    return []


def test_descriptions_render_as_written_in_the_docs_page(client: FlaskClient) -> None:
    """Descriptions are Markdown in the docs page: `**` or `__` outside a code span would turn bold."""
    texts = descriptions(document(client))
    assert any("`[-2**63, 2**63-1]`" in text for text in texts)
    bold = [text for text in texts if re.search(r"\*\*|__", re.sub(r"`[^`]*`", "", text))]
    assert bold == [], f"put these in backticks: {bold}"
