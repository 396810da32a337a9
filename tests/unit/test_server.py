"""The HTTP server's parts that need no socket: redacted access lines, JSON errors of its own, settings checked."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from collector.cli.server import access_logged, build_server, redact_query
from collector.config import Config
from collector.errors import ConfigError


@pytest.mark.parametrize(("query", "shown"), [
    ("token=abc", "token=***"),
    ("job_id=j1&token=abc&full=1", "job_id=j1&token=***&full=1"),
    ("API_KEY=abc&access_token=def&x=1", "API_KEY=***&access_token=***&x=1"),
    ("password=p&secret=s&sig=g&auth=a", "password=***&secret=***&sig=***&auth=***"),
    ("status=failed&limit=20", "status=failed&limit=20"),
    ("", ""),
])
def test_token_like_query_parameters_are_redacted(query: str, shown: str) -> None:
    assert redact_query(query) == shown


def test_an_access_line_redacts_the_query_and_escapes_the_path(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict, start_response: object) -> list[bytes]:
        start_response("404 NOT FOUND", [])  # type: ignore[operator]
        return [b""]

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/a\nFAKE LINE", "QUERY_STRING": "token=s3cr3t&x=1",
               "REMOTE_ADDR": "127.0.0.1"}
    with caplog.at_level(logging.INFO, logger="collector.access"):
        access_logged(app)(environ, lambda *a: None)
    [line] = [r.getMessage() for r in caplog.records if r.name == "collector.access"]
    assert "s3cr3t" not in line and "token=***&x=1" in line
    assert "\n" not in line and "/a%0AFAKE%20LINE" in line
    assert '"GET ' in line and " 404 " in line



def test_a_callback_links_input_is_never_logged_and_a_long_query_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict, start_response: object) -> list[bytes]:
        start_response("202 ACCEPTED", [])  # type: ignore[operator]
        return [b""]

    with caplog.at_level(logging.INFO, logger="collector.access"):
        for path, query in (("/execution/callback", "token=j.t&code=4%2F0AX4-S3CRET&state=xyz"),
                            ("/execution/list", "x=" + "a" * 5000)):
            access_logged(app)({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
                                "REMOTE_ADDR": "127.0.0.1"}, lambda *a: None)
    callback, listing = [r.getMessage() for r in caplog.records if r.name == "collector.access"]
    assert "S3CRET" not in callback and "xyz" not in callback and "token=***&code=***&state=***" in callback
    assert len(listing) < 1200 and "…(5002 chars)" in listing


@pytest.mark.parametrize("field", ["http_threads", "http_connection_limit", "http_header_timeout_s",
                                   "http_body_timeout_s", "http_idle_timeout_s"])
def test_settings_that_cannot_work_are_refused_at_start(field: str) -> None:
    config = dataclasses.replace(Config(), **{field: 0})
    with pytest.raises(ConfigError, match=f"COLLECTOR_{field.upper()}=0"):
        build_server(lambda e, s: [], host="127.0.0.1", port=0, config=config)
