"""A local HTTP server on 127.0.0.1 for tests of what reaches out over HTTP (sources, hooks, rate limits): routes
answered by test functions, requests recorded."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, str], bytes]


@dataclasses.dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


def json_answer(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(document).encode()


class LocalServer:
    """`route(path, answer)` where `answer(seen, calls_so_far)` returns (status, headers, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[Seen, int], Answer]] = {}
        self.requests: list[Seen] = []
        self.release = threading.Event()   # set at teardown: slow answers stop waiting
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, parts.path, dict(urllib.parse.parse_qsl(parts.query)),
                            {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                calls = sum(1 for r in server.requests if r.path == parts.path)
                server.requests.append(seen)
                route = server.routes.get(parts.path)
                status, headers, body = route(seen, calls) if route else json_answer({"error": "no route"}, 404)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass    # the client gave up (timeout tests)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def route(self, path: str, answer: Callable[[Seen, int], Answer]) -> None:
        self.routes[path] = answer

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    @classmethod
    @contextlib.contextmanager
    def serving(cls) -> Iterator[LocalServer]:
        """A server answering on a free port until the block ends; slow answers stop waiting then."""
        server = cls()
        server.thread.start()
        try:
            yield server
        finally:
            server.release.set()
            server.httpd.shutdown()
            server.httpd.server_close()
            server.thread.join(5)
