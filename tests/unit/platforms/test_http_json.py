"""The http_json platform against a local HTTP server: pagination, retries, timeouts, auth and masking."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import logging
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from collector.config import Config
from collector.errors import FatalError, JobFailedError, TransientError, ValidationError
from collector.http_client import retry_after
from collector.run.runner import Runtime, execute
from collector.specs.job import validate_spec
from collector.specs.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from collector.testkit import redis_contents
from collector.types import Secret
from platforms.http_json import HttpJson, dig, flatten, link_header_next
from tests.local_server import LocalServer, Seen, json_answer
from tests.unit.conftest import SECRET_KEY as KEY

TOKEN = "tok-9f8e7d6c5b4a"
PASSWORD = "pw-0a1b2c3d4e"


class RecordingContext:
    """The parts of RunContext a platform uses, recorded."""

    job_id = "test-job"

    def __init__(self) -> None:
        self.progress_calls: list[tuple[Any, ...]] = []
        self.datasets: dict[str, list[Any]] = {}
        self.secrets: list[str] = []
        self.log = logging.getLogger("tests.http_json")

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        self.progress_calls.append((done, total, message))

    def dataset(self, name: str, rows: Any) -> None:
        self.datasets[name] = json.loads(json.dumps(list(rows), default=str))

    def add_secrets(self, values: Any) -> None:
        self.secrets.extend(values)


def run(platform: HttpJson, sleeps: list[float] | None = None) -> tuple[dict[str, Any], RecordingContext]:
    """Run with a recorded sleep instead of a real one."""
    platform.client.sleep = (sleeps if sleeps is not None else []).append
    ctx = RecordingContext()
    return platform._run(ctx), ctx


def paged(items: list[dict[str, Any]], size_key: str = "per_page") -> Any:
    def answer(seen: Seen, _calls: int) -> Any:
        page, size = int(seen.query.get("page", 1)), int(seen.query.get(size_key, 2))
        return json_answer({"data": {"items": items[(page - 1) * size: page * size]}})
    return answer


ITEMS = [{"id": n, "owner": {"name": f"user{n}", "geo": {"cc": "FR"}}, "tags": ["a"]} for n in range(1, 6)]


def test_page_pagination_reads_until_a_short_page_and_flattens_records(local_server: LocalServer) -> None:
    local_server.route("/items", paged(ITEMS))
    result, ctx = run(HttpJson(url=local_server.url("/items"), params={"q": "x"}, record_path="data.items",
                               pagination="page", page_size=2))
    assert result == {"records": 5, "pages": 3}
    assert [(r.query["page"], r.query["per_page"], r.query["q"]) for r in local_server.seen("/items")] == [
        ("1", "2", "x"), ("2", "2", "x"), ("3", "2", "x")]
    assert ctx.datasets["processed"][0] == {"id": 1, "owner.name": "user1", "owner.geo.cc": "FR", "tags": ["a"]}
    assert [page["page"] for page in ctx.datasets["original"]] == [1, 2, 3]
    assert ctx.datasets["original"][2]["body"] == {"data": {"items": [ITEMS[4]]}}
    assert ctx.progress_calls == [(1, None, "page 1, 2 records"), (2, None, "page 2, 4 records"),
                                  (3, None, "page 3, 5 records")]


def test_page_pagination_without_page_size_stops_at_an_empty_page(local_server: LocalServer) -> None:
    local_server.route("/items", paged(ITEMS))
    result, _ = run(HttpJson(url=local_server.url("/items"), record_path="data.items", pagination="page",
                             start_page=2))
    assert result == {"records": 3, "pages": 3}   # pages 2, 3 and the empty 4
    assert [r.query["page"] for r in local_server.seen("/items")] == ["2", "3", "4"]


def test_max_pages_caps_the_pages_read_and_is_the_progress_total(local_server: LocalServer) -> None:
    local_server.route("/endless", lambda seen, n: json_answer([{"n": n}]))
    result, ctx = run(HttpJson(url=local_server.url("/endless"), pagination="page", max_pages=3))
    assert result == {"records": 3, "pages": 3} and len(local_server.seen("/endless")) == 3
    assert ctx.progress_calls[-1] == (3, 3, "page 3, 3 records")


def test_offset_pagination_advances_by_the_records_received(local_server: LocalServer) -> None:
    def answer(seen: Seen, _calls: int) -> Any:
        offset, limit = int(seen.query["start"]), int(seen.query["count"])
        return json_answer({"results": ITEMS[offset:offset + limit]})
    local_server.route("/offset", answer)
    result, ctx = run(HttpJson(url=local_server.url("/offset"), record_path="results", pagination="offset",
                               offset_param="start", limit_param="count", page_size=2))
    assert result == {"records": 5, "pages": 3}
    assert [(r.query["start"], r.query["count"]) for r in local_server.seen("/offset")] == [
        ("0", "2"), ("2", "2"), ("4", "2")]
    assert [row["id"] for row in ctx.datasets["processed"]] == [1, 2, 3, 4, 5]


def test_next_link_pagination_follows_relative_and_absolute_links(local_server: LocalServer) -> None:
    pages = {
        None: ({"items": [{"id": 1}], "links": {"next": "/feed?after=1"}}),
        "1": ({"items": [{"id": 2}], "links": {"next": local_server.url("/feed?after=2")}}),
        "2": ({"items": [{"id": 3}], "links": {"next": None}}),
    }
    local_server.route("/feed", lambda seen, _n: json_answer(pages[seen.query.get("after")]))
    result, ctx = run(HttpJson(url=local_server.url("/feed"), params={"sort": "id"}, record_path="items",
                               pagination="next_link", next_link_path="links.next"))
    assert result == {"records": 3, "pages": 3}
    # the first request carries `params`; a next link is followed exactly as the server gave it
    assert [r.query for r in local_server.seen("/feed")] == [{"sort": "id"}, {"after": "1"}, {"after": "2"}]
    assert ctx.datasets["original"][1]["url"] == local_server.url("/feed?after=1")


def test_next_link_comes_from_the_link_header_when_the_body_has_none(local_server: LocalServer) -> None:
    def answer(seen: Seen, calls: int) -> Any:
        link = {"Link": f'<{local_server.url("/h")}?p=2>; rel="next", <x>; rel="last"'} if calls == 0 else {}
        return json_answer([{"call": calls}], headers=link)
    local_server.route("/h", answer)
    result, _ = run(HttpJson(url=local_server.url("/h"), pagination="next_link"))
    assert result == {"records": 2, "pages": 2} and local_server.seen("/h")[1].query == {"p": "2"}


def test_cursor_pagination_sends_the_cursor_back_until_there_is_none(local_server: LocalServer) -> None:
    following = {None: "c1", "c1": "c2", "c2": None}
    local_server.route("/cur", lambda seen, n: json_answer(
        {"rows": [{"n": n}], "meta": {"next": following[seen.query.get("after")]}}))
    result, _ = run(HttpJson(url=local_server.url("/cur"), record_path="rows", pagination="cursor",
                             cursor_param="after", cursor_path="meta.next"))
    assert result == {"records": 3, "pages": 3}
    assert [r.query.get("after") for r in local_server.seen("/cur")] == [None, "c1", "c2"]


def test_a_repeated_cursor_ends_the_run_instead_of_looping(local_server: LocalServer) -> None:
    local_server.route("/stuck", lambda seen, n: json_answer({"rows": [{"n": n}], "next_cursor": "same"}))
    result, _ = run(HttpJson(url=local_server.url("/stuck"), record_path="rows", pagination="cursor"))
    assert result == {"records": 2, "pages": 2}


def test_post_sends_body_and_paging_as_json(local_server: LocalServer) -> None:
    def answer(seen: Seen, _calls: int) -> Any:
        asked = json.loads(seen.body)
        return json_answer({"hits": ITEMS[(asked["page"] - 1) * 2: asked["page"] * 2]})
    local_server.route("/search", answer)
    result, _ = run(HttpJson(url=local_server.url("/search"), method="POST", body={"term": "x"}, page_size=2,
                             record_path="hits", pagination="page", size_param="size"))
    assert result == {"records": 5, "pages": 3}
    first = local_server.seen("/search")[0]
    assert first.method == "POST" and first.headers["content-type"] == "application/json"
    assert json.loads(first.body) == {"term": "x", "page": 1, "size": 2}


def test_a_missing_record_path_fails_with_the_keys_found(local_server: LocalServer) -> None:
    local_server.route("/x", lambda seen, n: json_answer({"data": {"rows": []}}))
    with pytest.raises(FatalError, match=r"record_path 'data.items' not found.*'items'.*\['rows'\]"):
        run(HttpJson(url=local_server.url("/x"), record_path="data.items"))


def test_a_body_that_is_not_json_is_fatal(local_server: LocalServer) -> None:
    local_server.route("/html", lambda seen, n: (200, {"Content-Type": "text/html"}, b"<html>login</html>"))
    with pytest.raises(FatalError, match=r"did not answer JSON.*<html>login"):
        run(HttpJson(url=local_server.url("/html")))


def test_429_waits_as_long_as_retry_after_says(local_server: LocalServer) -> None:
    local_server.route("/busy", lambda seen, n: json_answer({"e": 1}, 429, {"Retry-After": "7"}) if n < 2
                       else json_answer([{"ok": True}]))
    sleeps: list[float] = []
    result, _ = run(HttpJson(url=local_server.url("/busy"), backoff_s=0.5), sleeps)
    assert result["records"] == 1 and sleeps == [7.0, 7.0] and len(local_server.seen("/busy")) == 3


def test_429_really_sleeps_for_retry_after(local_server: LocalServer) -> None:
    local_server.route("/busy", lambda seen, n: json_answer({}, 429, {"Retry-After": "1"}) if n == 0
                       else json_answer([{"ok": True}]))
    platform = HttpJson(url=local_server.url("/busy"), backoff_s=0.0)
    started = time.monotonic()
    result = platform._run(RecordingContext())
    assert result["records"] == 1 and time.monotonic() - started >= 0.95


def test_retry_after_reads_seconds_and_http_dates() -> None:
    soon = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), usegmt=True)
    assert retry_after("12") == 12.0 and retry_after(None) is None and retry_after("soon") is None
    assert 25 <= (retry_after(soon) or 0) <= 30
    assert retry_after("Mon, 01 Jan 2001 00:00:00 GMT") == 0.0


def test_a_retry_after_beyond_the_limit_fails_the_attempt_at_once(local_server: LocalServer) -> None:
    local_server.route("/later", lambda seen, n: json_answer({}, 503, {"Retry-After": "3600"}))
    with pytest.raises(TransientError, match="asks to wait 3600 s"):
        run(HttpJson(url=local_server.url("/later")))
    assert len(local_server.seen("/later")) == 1


def test_500_then_success_backs_off_exponentially(local_server: LocalServer) -> None:
    local_server.route("/flaky", lambda seen, n: json_answer({}, 500) if n < 2 else json_answer([{"n": 1}]))
    sleeps: list[float] = []
    result, _ = run(HttpJson(url=local_server.url("/flaky"), backoff_s=0.25), sleeps)
    assert result == {"records": 1, "pages": 1} and sleeps == [0.25, 0.5]


def test_500_forever_raises_transient_after_the_retries(local_server: LocalServer) -> None:
    local_server.route("/down", lambda seen, n: json_answer({"error": "boom"}, 502))
    sleeps: list[float] = []
    with pytest.raises(TransientError, match=r"HTTP 502.*gave up after 3 attempts"):
        run(HttpJson(url=local_server.url("/down"), max_retries=2), sleeps)
    assert len(local_server.seen("/down")) == 3 and sleeps == [1.0, 2.0]


def test_404_is_fatal_and_not_retried(local_server: LocalServer) -> None:
    with pytest.raises(FatalError, match="HTTP 404"):
        run(HttpJson(url=local_server.url("/missing")))
    assert len(local_server.seen("/missing")) == 1


def test_a_server_slower_than_timeout_s_is_transient_after_the_retries(local_server: LocalServer) -> None:
    def slow(seen: Seen, n: int) -> Any:
        local_server.release.wait(2.0)
        return json_answer([])
    local_server.route("/slow", slow)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"(?i)timed? ?out.*gave up after 2 attempts"):
        run(HttpJson(url=local_server.url("/slow"), timeout_s=0.2, max_retries=1))
    assert time.monotonic() - started < 1.9 and len(local_server.seen("/slow")) == 2


def test_a_refused_connection_is_transient(local_server: LocalServer) -> None:
    port = local_server.httpd.server_address[1]
    local_server.httpd.shutdown()
    local_server.httpd.server_close()
    with pytest.raises(TransientError, match="refused"):
        run(HttpJson(url=f"http://127.0.0.1:{port}/gone", max_retries=1))


def echo_auth(seen: Seen, _calls: int) -> Any:
    """A server that quotes the credentials it got back in its error body (some do)."""
    return json_answer({"error": "denied", "got": seen.headers.get("authorization"), "query": seen.query}, 401)


def test_bearer_token_is_sent_and_never_in_the_error(local_server: LocalServer) -> None:
    local_server.route("/auth", echo_auth)
    with pytest.raises(FatalError) as caught:
        run(HttpJson(url=local_server.url("/auth"), token=Secret(TOKEN)))
    assert local_server.seen("/auth")[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "HTTP 401" in str(caught.value) and "check the token" in str(caught.value)
    assert TOKEN not in str(caught.value) and "***" in str(caught.value)


def test_basic_auth_is_sent_and_neither_password_nor_header_is_in_the_error(local_server: LocalServer) -> None:
    local_server.route("/auth", echo_auth)
    with pytest.raises(FatalError) as caught:
        run(HttpJson(url=local_server.url("/auth"), username="ann", password=Secret(PASSWORD)))
    pair = base64.b64encode(f"ann:{PASSWORD}".encode()).decode()
    assert local_server.seen("/auth")[0].headers["authorization"] == f"Basic {pair}"
    assert PASSWORD not in str(caught.value) and pair not in str(caught.value)


def test_token_as_query_parameter_is_masked_in_errors_and_datasets(local_server: LocalServer) -> None:
    local_server.route("/auth", echo_auth)
    local_server.route("/ok", lambda seen, n: json_answer([{"n": 1}]))
    result, ctx = run(HttpJson(url=local_server.url("/ok"), token=Secret(TOKEN), token_param="api_key"))
    sent = local_server.seen("/ok")[0]
    assert result["records"] == 1 and sent.query["api_key"] == TOKEN and "authorization" not in sent.headers
    assert TOKEN not in json.dumps(ctx.datasets) and TOKEN in ctx.secrets
    with pytest.raises(FatalError) as caught:
        run(HttpJson(url=local_server.url("/auth"), token=Secret(TOKEN), token_param="api_key"))
    assert TOKEN not in str(caught.value)


def test_credentials_are_not_sent_to_another_host(local_server: LocalServer) -> None:
    # `localhost` and `127.0.0.1` reach the same server but are different origins
    other = local_server.url("/next").replace("127.0.0.1", "localhost")
    local_server.route("/first", lambda seen, n: json_answer({"items": [{"n": 1}], "next": other}))
    local_server.route("/next", lambda seen, n: json_answer({"items": [{"n": 2}]}))
    result, _ = run(HttpJson(url=local_server.url("/first"), token=Secret(TOKEN), record_path="items",
                             pagination="next_link"))
    assert result["records"] == 2
    assert local_server.seen("/first")[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "authorization" not in local_server.seen("/next")[0].headers


def test_a_redirect_to_another_host_drops_the_authorization_header(local_server: LocalServer) -> None:
    other = local_server.url("/landing").replace("127.0.0.1", "localhost")
    local_server.route("/moved", lambda seen, n: (302, {"Location": other}, b""))
    local_server.route("/landing", lambda seen, n: json_answer([{"n": 1}]))
    result, _ = run(HttpJson(url=local_server.url("/moved"), token=Secret(TOKEN)))
    assert result["records"] == 1 and "authorization" not in local_server.seen("/landing")[0].headers


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "ftp://x/y"}, "http:// or https://"),
        ({"url": "http://x", "token": Secret("t"), "username": "u"}, "either token"),
        ({"url": "http://x", "password": Secret("p")}, "needs both"),
        ({"url": "http://x", "body": {"a": 1}}, "only sent with method POST"),
        ({"url": "http://x", "page_size": 0}, "page_size=0"),
        ({"url": "http://x", "token_param": "key"}, "token is not"),
        ({"url": "http://x", "headers": {"Host": Secret("internal.example")}}, "Host are set by the client"),
        ({"url": "http://x", "headers": {"transfer-encoding": Secret("chunked")}}, "set by the client itself"),
    ],
)
def test_settings_that_contradict_each_other_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpJson(**settings)


def test_dig_flatten_and_link_header() -> None:
    assert dig({"a": [{"b": 1}, {"b": 2}]}, "a.1.b") == 2 and dig([1, 2], "") == [1, 2]
    with pytest.raises(KeyError, match="'c'"):
        dig({"a": {"b": 1}}, "a.c")
    assert flatten({"a": {"b": {"c": 1}}, "d": {}, "e": [1]}) == {"a.b.c": 1, "d": {}, "e": [1]}
    assert link_header_next('<https://x/2>; rel="next"') == "https://x/2" and link_header_next(None) is None


# ------------------------------------------------------------------------------------ through the runner


def submit(fake: fakeredis.FakeRedis, config: Config, settings: dict[str, Any]) -> str:
    submitter = Submitter(connection=fake, config=config, registry=Registry.discover("platforms"))
    return submitter.submit({"platform_id": "http_json", "settings": settings})["job_id"]


def test_a_job_pages_through_the_api_into_storage(local_server: LocalServer, data_dir: Path) -> None:
    local_server.route("/items", paged(ITEMS))
    fake, config = fakeredis.FakeRedis(), Config(secret_key=KEY, progress_interval_s=0.0, data_dir=str(data_dir),
                                                 egress_allow="127.0.0.1")
    try:
        out = data_dir / "items.jsonl"
        job_id = submit(fake, config, {
            "url": local_server.url("/items"), "token": TOKEN, "record_path": "data.items", "pagination": "page",
            "page_size": 2, "storage": {"type": "jsonl", "settings": {"path": "items.jsonl"}}})
        result = execute(job_id, Runtime(config, fake, Registry.discover("platforms")))
        assert result == {"records": 5, "pages": 3, "stored": 5}
        view = JobStore(fake, config).view(job_id, full=True)
        assert view is not None and view["status"] == "finished" and view["stored_rows"] == 5
        assert view["progress"]["done"] == 3 and view["progress"]["message"] == "page 3, 5 records"
        assert view["datasets"]["processed"][4] == {"id": 5, "owner.name": "user5", "owner.geo.cc": "FR",
                                                    "tags": ["a"]}
        assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1, 2, 3, 4, 5]
        assert local_server.seen("/items")[0].headers["authorization"] == f"Bearer {TOKEN}"
        assert not any(TOKEN.encode() in (fake.dump(key) or b"") for key in fake.keys("*"))
    finally:
        fake.close()


def test_a_job_refused_by_the_api_fails_without_showing_the_token(local_server: LocalServer) -> None:
    local_server.route("/auth", echo_auth)
    fake, config = fakeredis.FakeRedis(), Config(secret_key=KEY, egress_allow="127.0.0.1")
    try:
        job_id = submit(fake, config, {"url": local_server.url("/auth"), "token": TOKEN})
        with pytest.raises(JobFailedError, match="HTTP 401") as caught:
            execute(job_id, Runtime(config, fake, Registry.discover("platforms")))
        view = JobStore(fake, config).view(job_id, full=True)
        assert view is not None and view["status"] == "failed" and view["error"]["type"] == "FatalError"
        assert TOKEN not in json.dumps(view) and TOKEN not in str(caught.value)
    finally:
        fake.close()


def test_a_job_with_an_unknown_pagination_style_is_refused_at_submit() -> None:
    fake = fakeredis.FakeRedis()
    try:
        with pytest.raises(ValidationError) as caught:
            submit(fake, Config(secret_key=KEY), {"url": "http://x", "pagination": "pages"})
        assert "settings.pagination" in caught.value.details and fake.keys("*") == []
    finally:
        fake.close()


def test_the_example_spec_validates() -> None:
    spec = json.loads((Path(__file__).resolve().parents[3] / "examples" / "http_json.json").read_text())
    job = validate_spec(spec, Registry.discover("platforms"))
    settings = job.platform.settings.schema().load(job.settings)
    platform = HttpJson(**settings)
    assert platform.pagination == "next_link" and platform.max_pages == 3


def test_an_api_that_ignores_the_page_parameter_is_read_once(local_server: LocalServer) -> None:
    local_server.route("/same", lambda seen, n: json_answer([{"id": 1}, {"id": 2}]))
    result, _ = run(HttpJson(url=local_server.url("/same"), pagination="page"))
    assert result == {"records": 2, "pages": 1} and len(local_server.seen("/same")) == 2


def test_a_next_link_that_is_not_http_is_fatal(local_server: LocalServer) -> None:
    local_server.route("/odd", lambda seen, n: json_answer({"items": [], "next": "ftp://elsewhere/x"}))
    with pytest.raises(FatalError, match="not an http"):
        run(HttpJson(url=local_server.url("/odd"), record_path="items", pagination="next_link"))


API_KEY = "key-4c3b2a1f0e9d"


def echo_everything(seen: Seen, _calls: int) -> Any:
    """An API that returns the credentials it was sent in its records, as some do."""
    return json_answer({"items": [{"auth": seen.headers.get("authorization"), "key": seen.headers.get("x-api-key"),
                                   "echo": {seen.headers.get("x-api-key"): "as a key"}}]})


def test_header_values_are_secrets_masked_in_errors_and_kept_to_the_first_host(local_server: LocalServer) -> None:
    other = local_server.url("/next").replace("127.0.0.1", "localhost")
    local_server.route("/first", lambda seen, n: json_answer({"items": [{"n": 1}], "next": other}))
    local_server.route("/next", lambda seen, n: (302, {"Location": other.replace("/next", "/last")}, b""))
    local_server.route("/last", lambda seen, n: json_answer({"items": [{"n": 2}]}))
    platform = HttpJson(url=local_server.url("/first"), headers={"X-Api-Key": Secret(API_KEY)}, record_path="items",
                        pagination="next_link")
    result, ctx = run(platform)
    assert result["records"] == 2 and API_KEY in ctx.secrets
    assert local_server.seen("/first")[0].headers["x-api-key"] == API_KEY
    assert "x-api-key" not in local_server.seen("/next")[0].headers
    assert "x-api-key" not in local_server.seen("/last")[0].headers
    local_server.route("/denied", lambda seen, n: json_answer({"error": "bad key", "got": seen.headers["x-api-key"]},
                                                              403))
    with pytest.raises(FatalError) as caught:
        run(HttpJson(url=local_server.url("/denied"), headers={"X-Api-Key": Secret(API_KEY)}))
    assert "HTTP 403" in str(caught.value) and API_KEY not in str(caught.value)


def test_a_redirect_to_another_host_drops_secret_headers(local_server: LocalServer) -> None:
    other = local_server.url("/landing").replace("127.0.0.1", "localhost")
    local_server.route("/moved", lambda seen, n: (302, {"Location": other}, b""))
    local_server.route("/landing", lambda seen, n: json_answer([{"n": 1}]))
    run(HttpJson(url=local_server.url("/moved"), headers={"x-api-key": Secret(API_KEY), "X-Trace": Secret("t-1")}))
    assert local_server.seen("/moved")[0].headers["x-api-key"] == API_KEY
    assert {"x-api-key", "x-trace"}.isdisjoint(local_server.seen("/landing")[0].headers)


def test_a_job_against_an_api_that_echoes_its_credentials_keeps_none(local_server: LocalServer) -> None:
    local_server.route("/echo", echo_everything)
    fake, config = fakeredis.FakeRedis(), Config(secret_key=KEY, egress_allow="127.0.0.1")
    try:
        job_id = submit(fake, config, {"url": local_server.url("/echo"), "token": TOKEN, "record_path": "items",
                                       "headers": {"X-Api-Key": API_KEY}})
        assert execute(job_id, Runtime(config, fake, Registry.discover("platforms"))) == {"records": 1, "pages": 1}
        assert local_server.seen("/echo")[0].headers["x-api-key"] == API_KEY
        view = JobStore(fake, config).view(job_id, full=True)
        assert view is not None and view["settings"]["headers"] == {"X-Api-Key": "***"}
        assert view["datasets"]["processed"] == [{"auth": "Bearer ***", "key": "***", "echo.***": "as a key"}]
        assert view["datasets"]["original"][0]["body"]["items"][0]["echo"] == {"***": "as a key"}
        everything = redis_contents(fake)
        assert TOKEN.encode() not in everything and API_KEY.encode() not in everything
    finally:
        fake.close()
