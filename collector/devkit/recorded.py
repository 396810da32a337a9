"""A fake HTTP source for dry runs: a local server answering the responses a platform author recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RECORDED_URL = "{recorded_url}"   # in a setting's text, replaced by the server's address
RECORDED_HOST = "127.0.0.1"       # where the server listens (dry runs put it on the egress allow-list)


def substitute(value: Any, url: str) -> Any:
    """`value` with every `{recorded_url}` in its strings replaced by `url`."""
    if isinstance(value, str):
        return value.replace(RECORDED_URL, url)
    if isinstance(value, Mapping):
        return {k: substitute(v, url) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, url) for v in value]
    return value


def _encode(response: Any) -> tuple[int, str, bytes]:
    status, body = response if isinstance(response, tuple) else (200, response)
    if isinstance(body, bytes):
        return status, "application/octet-stream", body
    if isinstance(body, str):
        return status, "text/plain; charset=utf-8", body.encode()
    return status, "application/json", json.dumps(body).encode()


class RecordedResponses:
    """Serves `responses` on 127.0.0.1: keys are `"/path"`, `"/path?query"` or `"GET /path?query"`, the most
    specific match wins. Every request is kept in `requests` (method, target, body, headers); one with no
    recorded response gets a 404 and is kept in `unmatched`, so a test can say which response is missing."""

    def __init__(self, responses: Mapping[str, Any]) -> None:
        self.responses = dict(responses)
        self.requests: list[dict[str, Any]] = []
        self.unmatched: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the recorded-responses server is not started; use it as a context manager")
        return f"http://{RECORDED_HOST}:{self._server.server_port}"

    def answer(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        self.requests.append(
            {"method": method, "target": target, "body": body.decode(errors="replace"), "headers": dict(headers)}
        )
        path = target.split("?", 1)[0]
        for key in (f"{method} {target}", target, f"{method} {path}", path):
            if key in self.responses:
                return _encode(self.responses[key])
        self.unmatched.append(f"{method} {target}")
        return _encode((404, {"error": f"no recorded response for {method} {target}"}))

    def __enter__(self) -> RecordedResponses:
        recorded = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, kind, payload = recorded.answer(self.command, self.path, self.rfile.read(length), self.headers)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer((RECORDED_HOST, 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
