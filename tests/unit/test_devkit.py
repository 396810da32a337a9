"""The local runner's parts: the debugger hook, the progress bar, `--set`, masked secrets, recorded responses."""

from __future__ import annotations

import io
import json
import logging
import traceback
import urllib.error
import urllib.request

import fakeredis
import pytest

from collector.cli.display import ProgressBar, console_logging
from collector.config import Config
from collector.devkit.local import check_spec, local_runtime, run_local
from collector.devkit.recorded import RecordedResponses, substitute
from collector.devkit.specsource import apply_sets, fetch_job_spec, missing_secrets, parse_value
from collector.errors import JobFailedError, SpecSourceError, ValidationError
from collector.run.runner import Runtime, execute
from collector.specs.job import validate_spec
from collector.specs.registry import Registry
from collector.submit.submitter import Submitter


def test_the_failure_hook_gets_the_original_exception_while_the_raised_error_stays_masked(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=registry).submit(
        {"platform_id": "demo", "settings": {"rows": 5, "fail_at": 2}})["job_id"]
    seen: list[BaseException] = []
    with pytest.raises(JobFailedError) as raised:
        execute(job_id, Runtime(unit_config, fake_redis, registry, on_failure=seen.append))
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert type(seen[0]).__name__ == "FatalError"
    frames = [frame.name for frame in traceback.extract_tb(seen[0].__traceback__)]
    assert frames[-1] == "_run"  # the debugger starts where the platform raised


def test_run_local_without_a_service_keeps_the_outcome_and_the_exception(registry: Registry) -> None:
    runtime = local_runtime(Config(), registry=registry)
    assert runtime.config.secret_key  # a key for this process seals what the spec gives as secrets
    progress: list[dict] = []
    good = run_local({"platform_id": "demo", "settings": {"rows": 4}}, runtime, on_progress=progress.append)
    assert good.ok and good.result == {"rows": 4} and good.exception is None
    assert len(good.datasets["original"]) == 4 and progress[-1]["percent"] == 100.0
    bad = run_local({"platform_id": "demo", "settings": {"rows": 4, "fail_at": 3}}, runtime)
    assert not bad.ok and bad.error is not None and bad.error["type"] == "FatalError"
    assert str(bad.exception) == "demo failure at row 3 (fail_at=3)"
    assert runtime.on_failure is None  # the hook is only set for the run that asked for it


def test_a_platform_that_failed_to_load_is_named_with_its_reason() -> None:
    registry = Registry.discover("tests.devkit_platforms")
    with pytest.raises(ValidationError) as refused:
        check_spec({"platform_id": "broken"}, registry)
    assert "broken.py failed to load: ImportError: this file is broken on purpose" in refused.value.message


def test_set_parses_json_values_and_reaches_into_nested_settings() -> None:
    body = apply_sets({"platform_id": "x", "settings": {"rows": 1}},
                      ["rows=10", "name=ada", "flags=[1, 2]", "storage.settings.password=p=w", "ok=true"])
    assert body["settings"] == {"rows": 10, "name": "ada", "flags": [1, 2], "ok": True,
                                "storage": {"settings": {"password": "p=w"}}}
    assert parse_value("007") == "007" and parse_value('"7"') == "7" and parse_value("1.5") == 1.5
    with pytest.raises(SpecSourceError, match="is not NAME=VALUE"):
        apply_sets({}, ["rows"])
    with pytest.raises(SpecSourceError, match="'rows' is not an object"):
        apply_sets({"settings": {"rows": 1}}, ["rows.x=1"])


def test_masked_secrets_are_named_until_given() -> None:
    registry = Registry.discover("tests.devkit_platforms")
    spec = validate_spec({"platform_id": "vault", "settings": {"username": "ada", "password": "***"}}, registry)
    assert missing_secrets(spec) == ["password"]
    spec = validate_spec({"platform_id": "vault", "settings": {"username": "ada", "password": "pw"}}, registry)
    assert missing_secrets(spec) == []


def progress(done: int, total: int | None, message: str | None = None) -> dict:
    return {"status": "started", "progress": {
        "done": done, "total": total, "percent": 100.0 * done / total if total else None, "message": message,
    }}


def test_the_bar_redraws_in_place_on_a_terminal_and_lets_log_lines_through() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, live=True)
    with console_logging(bar):
        bar.update(progress(1, 4, "one"))
        logging.getLogger("platforms.demo").warning("half way")
        bar.update(progress(4, 4, "four"))
    bar.close()
    text = stream.getvalue()
    first = text.split("\x1b[K")[0]
    assert first.startswith("\rstarted  [######..................]  25.0%  1/4 rows  ")
    assert "/s  ETA " in first and first.endswith("  one")
    # The bar is erased, the log line printed, then the bar drawn again below it.
    assert "\r\x1b[KWARNING platforms.demo half way\n\r" in text
    last = text.rsplit("\r", 1)[1]
    assert last.startswith("started  [########################] 100.0%  4/4 rows") and last.endswith("four\x1b[K\n")


def test_without_a_terminal_the_bar_prints_now_and_then_and_always_the_end() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, live=False)
    for n in range(1, 101):
        bar.update(progress(n, 100))
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "1.0%" in lines[0] and "100.0%  100/100 rows" in lines[1]
    unknown = io.StringIO()
    ProgressBar(unknown, live=False).update(progress(7, None), last=True)
    assert "7 rows" in unknown.getvalue() and "?" not in unknown.getvalue()


def test_recorded_responses_answer_the_most_specific_match_and_keep_what_was_missing() -> None:
    responses = {"/a": {"any": True}, "/a?x=1": {"x": 1}, "POST /a": (201, "made"), "/raw": b"\x00\x01"}
    with RecordedResponses(responses) as server:
        def get(path: str, data: bytes | None = None) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(urllib.request.Request(server.url + path, data=data), timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        assert get("/a?x=1") == (200, b'{"x": 1}')
        assert get("/a?x=2") == (200, b'{"any": true}')
        assert get("/a", data=b"{}") == (201, b"made")
        assert get("/raw") == (200, b"\x00\x01")
        status, body = get("/nope")
        assert status == 404 and "no recorded response for GET /nope" in json.loads(body)["error"]
        assert server.unmatched == ["GET /nope"] and len(server.requests) == 5
    assert substitute({"u": "{recorded_url}/v1", "n": [1, "{recorded_url}"]}, "http://h") == {
        "u": "http://h/v1", "n": [1, "http://h"]}


def test_from_job_asks_the_service_with_the_api_token_and_keeps_platform_settings_and_reference() -> None:
    record = {"job_id": "j1", "status": "failed", "platform_id": "vault", "client_id": "ref-7",
              "settings": {"username": "ada", "password": "***"}, "error": {"type": "FatalError"}}
    with RecordedResponses({"/execution/get?job_id=j1": record, "/execution/get?job_id=gone": (404, {
            "error": "not_found", "message": "no job 'gone'"})}) as server:
        body = fetch_job_spec("j1", url=server.url + "/", token="tok-abc")
        assert body == {"platform_id": "vault", "settings": {"username": "ada", "password": "***"}, "_id": "ref-7"}
        assert server.requests[0]["headers"]["Authorization"] == "Bearer tok-abc"
        with pytest.raises(SpecSourceError, match="answered 404 for job 'gone': no job 'gone'"):
            fetch_job_spec("gone", url=server.url)
        assert "Authorization" not in server.requests[1]["headers"]


def test_a_replayed_job_asks_for_each_masked_header_and_runs_once_they_are_given(
    registry: Registry, allow_loopback: None
) -> None:
    key = "hdr-key-0f1e2d3c4b"
    source = {"/v1/items": {"items": [{"id": 1, "sent_key": key}]}}
    with RecordedResponses(source) as api:
        record = {"job_id": "j2", "status": "failed", "platform_id": "http_json", "settings": {
            "url": api.url + "/v1/items", "record_path": "items", "headers": {"X-Api-Key": "***", "Accept": "***"}}}
        with RecordedResponses({"/execution/get?job_id=j2": record}) as service:
            body = fetch_job_spec("j2", url=service.url)
        assert missing_secrets(check_spec(body, registry)) == ["headers.X-Api-Key", "headers.Accept"]
        body = apply_sets(body, [f"headers.X-Api-Key={key}", "headers.Accept=application/json"])
        assert missing_secrets(check_spec(body, registry)) == []
        outcome = run_local(body, local_runtime(Config(egress_allow="127.0.0.1"), registry=registry))
        assert outcome.ok, outcome.error
        assert api.requests[0]["headers"]["X-Api-Key"] == key
    assert outcome.record["settings"]["headers"] == {"X-Api-Key": "***", "Accept": "***"}
    assert outcome.datasets["processed"] == [{"id": 1, "sent_key": "***"}]
