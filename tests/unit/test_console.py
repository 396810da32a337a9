"""The console at /ui/: pages render from the services, forms carry CSRF tokens, login and scopes, the event stream."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from collector.app import create_app
from collector.config import Config
from collector.specs.registry import Registry
from tests.unit.conftest import SECRET_KEY

SECRETS = {"reader": "reader-token-0123456789abcdef", "ops": "ops-token-0123456789abcdef0",
           "boss": "boss-token-0123456789abcdef"}
TOKENS = ",".join([f"reader:read:{SECRETS['reader']}", f"ops:operate:{SECRETS['ops']}",
                   f"boss:admin:{SECRETS['boss']}"])


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def submit_demo(client: FlaskClient, **settings: str) -> Any:
    token = csrf(client.get("/ui/submit?platform_id=demo").get_data(as_text=True))
    return client.post("/ui/submit", data={"csrf_token": token, "platform_id": "demo", **settings})


def test_every_page_renders_in_open_mode_and_says_so(client: FlaskClient) -> None:
    for path in ("/ui/jobs", "/ui/submit", "/ui/inbox", "/ui/processes", "/ui/schedules"):
        response = client.get(path)
        assert response.status_code == 200, path
        page = response.get_data(as_text=True)
        assert "Open mode: no tokens configured, no login" in page, path
        assert "http://" not in page.replace('href="http', ""), f"{path} loads something from outside"
    assert client.get("/ui/").headers["Location"].endswith("/ui/jobs")
    css = client.get("/ui/static/console.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    css.close()


def test_the_submit_form_is_built_from_the_settings_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.secret_platforms import LEAKY, make_package

    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.discover(make_package(tmp_path, "consoleformplatforms", leaky=LEAKY))
    app = create_app(Config(secret_key=SECRET_KEY), connection=fakeredis.FakeRedis(), registry=registry,
                     dashboard=False)
    page = app.test_client().get("/ui/submit?platform_id=leaky").get_data(as_text=True)
    assert re.search(r'<input type="password" id="f-password" name="password" value=""', page)
    assert re.search(r'<input type="password" id="f-token" name="token" value=""', page)
    outcome = re.search(r'<select id="f-outcome" name="outcome"\s*>(.*?)</select>', page, re.S)
    assert outcome and re.findall(r"<option[^>]*>(\w+)</option>", outcome.group(1)) == ["succeed", "fail", "crash"]
    assert re.search(r'id="f-user" name="user" value="svc"', page), "the default fills the field"


def test_a_submitted_form_lands_on_the_job_page(client: FlaskClient) -> None:
    response = submit_demo(client, rows="7", delay_s="", fail_at="")
    assert response.status_code == 303
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    view = client.get(f"/execution/get?job_id={job_id}").get_json()
    assert view["status"] == "queued" and view["settings"]["rows"] == 7 and view["settings"]["fail_at"] is None
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"job {job_id} queued" in page and 'id="cancel"' in page and 'id="progress"' in page


def test_the_job_page_shows_each_attempt_and_how_it_ended(client: FlaskClient) -> None:
    job_id = submit_demo(client).headers["Location"].rsplit("/", 1)[1]
    store = client.application.extensions["collector"].store
    store.event(job_id, "started", worker="w1")
    store.event(job_id, "retry_scheduled", error={"type": "TransientError", "message": "source busy"})
    store.event(job_id, "started", worker="w2")
    store.event(job_id, "finished")
    page = client.get(f"/ui/jobs/{job_id}").get_data(as_text=True)
    rows = re.findall(r"<tr><td>(\d)</td><td>[^<]*</td><td>(\w*)</td><td><span class=\"status \w+\">(\w+)</span>"
                      r"</td><td>[^<]*</td><td>([^<]*)</td></tr>", page)
    assert rows == [("1", "w1", "retry_scheduled", "source busy"), ("2", "w2", "finished", "")]


def test_field_errors_are_shown_next_to_their_fields(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    response = submit_demo(client, rows="many", delay_s="-x")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    rows = re.search(r'data-field="rows">(.*?)</div>', page, re.S)
    assert rows and 'id="error-rows"' in rows.group(1) and "Not a valid integer" in rows.group(1)
    assert 'value="many"' in rows.group(1), "what was typed is kept"
    assert 'id="error-delay_s"' in page
    assert not fake_redis.keys("collector:job:*"), "a refused form writes nothing"


def test_a_form_post_without_the_csrf_token_or_from_another_site_is_refused(client: FlaskClient) -> None:
    job_id = submit_demo(client).headers["Location"].rsplit("/", 1)[1]
    bare = client.post(f"/ui/jobs/{job_id}/cancel", data={})
    assert bare.status_code == 403 and "carries no valid CSRF token" in bare.get_data(as_text=True)
    token = csrf(client.get(f"/ui/jobs/{job_id}").get_data(as_text=True))
    foreign = client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf_token": token},
                          headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert client.get(f"/execution/get?job_id={job_id}").get_json()["status"] == "queued"
    done = client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert done.status_code == 303
    assert client.get(f"/execution/get?job_id={job_id}").get_json()["status"] == "canceled"


@pytest.fixture
def secured_app(fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> Flask:
    config = Config(secret_key=unit_config.secret_key, api_tokens=TOKENS, data_dir=unit_config.data_dir)
    return create_app(config, connection=fake_redis, registry=registry, dashboard=False)


def sign_in(client: FlaskClient, name: str) -> Any:
    token = csrf(client.get("/ui/login").get_data(as_text=True))
    return client.post("/ui/login?next=/ui/inbox", data={"csrf_token": token, "token": SECRETS[name]})


def test_with_tokens_a_page_needs_a_session_and_the_login_sets_a_strict_cookie(secured_app: Flask) -> None:
    client = secured_app.test_client()
    refused = client.get("/ui/jobs?status=queued")
    assert refused.status_code == 302 and "/ui/login?next=" in refused.headers["Location"]
    assert client.get("/execution/stream?job_id=abc").status_code == 401
    assert client.post("/ui/login", data={"token": SECRETS["ops"]}).status_code == 401, "no CSRF token: refused"
    wrong = client.post("/ui/login", data={"csrf_token": csrf(client.get("/ui/login").get_data(as_text=True)),
                                           "token": "not-a-token-0123456789"})
    assert wrong.status_code == 401 and 'id="refused"' in wrong.get_data(as_text=True)
    answer = sign_in(client, "ops")
    assert answer.status_code == 303 and answer.headers["Location"] == "/ui/inbox"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert SECRETS["ops"] not in cookie, "the cookie holds no token"
    page = client.get("/ui/jobs").get_data(as_text=True)
    assert "Signed in as <b>ops</b>" in page and "Open mode" not in page
    assert client.get("/execution/stream?job_id=abc").status_code == 404, "the stream takes the session"
    assert client.post("/execution/cancel?job_id=abc", json={}).status_code == 401, "the API takes no cookie"


def test_what_a_page_offers_follows_the_token_scopes(secured_app: Flask) -> None:
    boss = secured_app.test_client()
    sign_in(boss, "boss")
    response = submit_demo(boss)
    job_page = response.headers["Location"]
    assert 'id="cancel"' in boss.get(job_page).get_data(as_text=True)
    reader = secured_app.test_client()
    sign_in(reader, "reader")
    page = reader.get(job_page).get_data(as_text=True)
    assert 'id="cancel"' not in page and ">Submit</a>" not in page
    denied = reader.post(job_page + "/cancel", data={"csrf_token": csrf(page)})
    assert denied.status_code == 403 and "that needs scope &#39;operate&#39;" in denied.get_data(as_text=True)
    ops = secured_app.test_client()
    sign_in(ops, "ops")
    assert ops.get("/ui/submit").status_code == 403, "submitting needs scope submit"


def test_a_session_ends_when_its_token_is_removed_and_is_secure_over_https(
        secured_app: Flask, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> None:
    client = secured_app.test_client()
    cookie = sign_in(client, "ops").headers["Set-Cookie"]
    value = re.search(r"collector_console=([^;]+)", cookie).group(1)
    kept = Config(secret_key=unit_config.secret_key, api_tokens=TOKENS, data_dir=unit_config.data_dir)
    revoked = Config(secret_key=unit_config.secret_key, api_tokens=f"reader:read:{SECRETS['reader']}",
                     data_dir=unit_config.data_dir)
    for config, status in ((kept, 200), (revoked, 302)):
        other = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
        other.set_cookie("collector_console", value)
        assert other.get("/ui/jobs").status_code == status, "another API process with the same key and tokens"
    https = secured_app.test_client()
    page = https.get("/ui/login", base_url="https://localhost").get_data(as_text=True)
    answer = https.post("/ui/login", base_url="https://localhost", data={"csrf_token": csrf(page),
                                                                         "token": SECRETS["ops"]})
    assert "Secure" in answer.headers["Set-Cookie"]
    assert "Secure" not in cookie


def test_signing_out_ends_the_session(secured_app: Flask) -> None:
    client = secured_app.test_client()
    sign_in(client, "reader")
    page = client.get("/ui/jobs").get_data(as_text=True)
    assert client.post("/ui/logout", data={"csrf_token": csrf(page)}).status_code == 303
    assert client.get("/ui/jobs").status_code == 302


def stream_events(body: str) -> list[tuple[str, Any]]:
    found = []
    for block in body.split("\n\n"):
        kind = re.search(r"^event: (\w+)$", block, re.M)
        data = re.search(r"^data: (.*)$", block, re.M)
        if kind and data:
            found.append((kind.group(1), json.loads(data.group(1))))
    return found


def test_the_stream_sends_status_progress_and_events_and_ends_with_the_job(client: FlaskClient,
                                                                          fake_redis: fakeredis.FakeRedis) -> None:
    job_id = client.post("/execution/run", json={"platform_id": "demo", "settings": {"rows": 2}}).get_json()["job_id"]
    store = client.application.extensions["collector"].store
    store.event(job_id, "log", message="half way there")
    fake_redis.hset(store.keys.job(job_id), mapping={
        "status": "finished", "progress": json.dumps({"done": 2, "total": 2, "percent": 100.0})})
    response = client.get(f"/execution/stream?job_id={job_id}")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data(as_text=True)
    assert body.startswith("retry: ")
    events = stream_events(body)
    assert ("status", {"job_id": job_id, "status": "finished", "error": None, "started_at": None,
                       "ended_at": None}) in events
    assert any(kind == "progress" and data["progress"]["percent"] == 100.0 for kind, data in events)
    timeline = [(data["type"], data.get("message")) for kind, data in events if kind == "event"]
    assert ("log", "half way there") in timeline
    assert events[-1] == ("end", {"reason": "ended"})


def test_the_stream_ends_at_its_time_limit(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                           registry: Registry) -> None:
    config = Config(secret_key=SECRET_KEY, data_dir=unit_config.data_dir, stream_max_s=0.3)
    client = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    job_id = client.post("/execution/run", json={"platform_id": "demo", "settings": {}}).get_json()["job_id"]
    events = stream_events(client.get(f"/execution/stream?job_id={job_id}").get_data(as_text=True))
    assert events[-1] == ("end", {"reason": "time limit", "max_s": 0.3})
    assert client.get("/execution/stream?job_id=nosuchjob").status_code == 404


def test_streams_take_at_most_half_the_http_threads(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                                    registry: Registry) -> None:
    config = Config(secret_key=SECRET_KEY, data_dir=unit_config.data_dir, http_threads=2)
    client = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    job_id = client.post("/execution/run", json={"platform_id": "demo", "settings": {}}).get_json()["job_id"]
    first = client.get(f"/execution/stream?job_id={job_id}")
    assert first.status_code == 200
    busy = client.get(f"/execution/stream?job_id={job_id}")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    first.close()  # the server closes an answer when its client goes away: the stream's thread is free again
    again = client.get(f"/execution/stream?job_id={job_id}&job_id={job_id}")
    assert again.status_code == 200
    again.close()


def test_submit_wait_follows_the_stream_and_reads_the_job_only_when_its_status_changes(
        fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry) -> None:
    import io
    import threading

    from collector.cli.client import Client, wait
    from tests.conftest import ServedApp

    app = create_app(unit_config, connection=fake_redis, registry=registry, dashboard=False)
    reads: list[str] = []

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        reads.append(environ["PATH_INFO"])
        return app(environ, start_response)

    served = ServedApp(counting)
    try:
        job_id = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {}})[1]["job_id"]
        key = app.extensions["collector"].store.keys.job(job_id)

        def run_the_job() -> None:
            for done in range(1, 11):
                time.sleep(0.25)
                fake_redis.hset(key, mapping={"status": "started", "progress": json.dumps(
                    {"done": done, "total": 10, "percent": done * 10.0})})
            fake_redis.hset(key, "status", "finished")

        threading.Thread(target=run_the_job, daemon=True).start()
        out = io.StringIO()
        assert wait(Client(served.url), job_id, out=out)["status"] == "finished"
    finally:
        served.close()
    assert "/execution/stream" in reads and "100" in out.getvalue()
    # Read at the start, then on each status the stream tells (its first, started, finished); polling reads 6+.
    assert reads.count("/execution/get") <= 4, f"the job was read more often than its status changed: {reads}"


def test_resuming_a_job_that_does_not_wait_says_so(client: FlaskClient) -> None:
    job_id = submit_demo(client).headers["Location"].rsplit("/", 1)[1]
    page = client.get(f"/ui/jobs/{job_id}").get_data(as_text=True)
    answer = client.post(f"/ui/jobs/{job_id}/resume", data={"csrf_token": csrf(page), "input": "x"})
    assert answer.status_code == 409 and "not waiting for input" in answer.get_data(as_text=True)


def test_signing_out_ends_the_session_for_a_copy_of_its_cookie_too(secured_app: Flask) -> None:
    """The cookie is signed, not stored: a copy kept from before signing out would otherwise stay good for hours."""
    client = secured_app.test_client()
    sign_in(client, "ops")
    kept = client.get_cookie("collector_console")
    assert kept is not None and client.get("/ui/jobs").status_code == 200
    page = client.get("/ui/jobs").get_data(as_text=True)
    assert client.post("/ui/logout", data={"csrf_token": csrf(page)}).status_code == 303
    assert client.get("/ui/jobs").status_code == 302, "the browser's own cookie is gone"
    copy = secured_app.test_client()
    copy.set_cookie("collector_console", kept.value)
    assert copy.get("/ui/jobs").status_code == 302, "a copy of the cookie kept from before is refused"
    assert copy.get("/execution/stream?job_id=abc").status_code == 401
    again = secured_app.test_client()
    sign_in(again, "ops")
    assert again.get("/ui/jobs").status_code == 200, "signing in again starts a session of its own"


def test_console_pages_are_not_cached_and_a_next_that_could_split_a_header_is_dropped(
    secured_app: Flask, client: FlaskClient
) -> None:
    assert client.get("/ui/jobs").headers["Cache-Control"] == "no-store"
    with client.get("/ui/static/console.css") as stylesheet:
        assert "no-store" not in stylesheet.headers.get("Cache-Control", "")
    login = secured_app.test_client()
    for target in ("/ui/%0d%0aSet-Cookie:%20x=1", "/ui/\\evil.example", "/ui//evil.example", "https://evil.example/"):
        page = login.get(f"/ui/login?next={target}")
        assert page.status_code == 200, target
        token = csrf(page.get_data(as_text=True))
        answer = login.post(f"/ui/login?next={target}", data={"csrf_token": token, "token": SECRETS["ops"]})
        assert answer.status_code == 303 and answer.headers["Location"] == "/ui/jobs", target
