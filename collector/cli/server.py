"""The HTTP server of `collector serve` and `collector up`: waitress, with deadlines on requests, until a signal.

waitress reads every connection in one event loop and hands a thread only a request that has arrived
whole (headers and body), so slow clients hold a socket but no thread. On top of its idle timeout
(`COLLECTOR_HTTP_IDLE_TIMEOUT_S`, which closes kept-alive and stalled connections) and its size limits
(bodies over `COLLECTOR_MAX_BODY_BYTES`, chunked or not, answer 413 before the app is called), a
request must have sent its headers within `COLLECTOR_HTTP_HEADER_TIMEOUT_S` and its body within
`COLLECTOR_HTTP_BODY_TIMEOUT_S` of its first byte: a client that dribbles a byte now and then (slowloris)
is closed. Errors waitress answers itself are JSON like the API's; access lines redact token-like
query parameters.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from collector import defaults
from collector.config import Config
from collector.errors import ConfigError

log = logging.getLogger(__name__)
access = logging.getLogger("collector.access")

CALLBACK_PATH = "/execution/callback"  # its query is a waiting job's input: no value of it is logged
LOGGED_QUERY_CHARS = 1000  # of a query string in an access line; the rest is counted, not shown
# Query parameters whose values an access line never shows (`?token=`, `?api_key=`, `?password=`, ...).
SECRET_PARAMETER = re.compile(r"token|secret|passw|pwd|key|auth|sig|session|credential", re.IGNORECASE)
# Characters left as they are when a path is quoted for an access line; anything else (control characters
# that could forge a log line included) is percent-encoded.
PATH_SAFE = "/:@!$&'()*+,;=-._~"


class JSONErrorTask(ErrorTask):
    """The answers waitress gives itself (413, 431, 400 for what is not HTTP) as the API's JSON errors."""

    def execute(self) -> None:
        error = self.request.error
        server: CollectorServer = self.channel.server
        message = {
            413: f"the body is larger than {server.max_body_bytes} bytes; send at most {server.max_body_bytes} "
                 "bytes (COLLECTOR_MAX_BODY_BYTES), chunked or not",
            431: f"the request line and headers are larger than {defaults.HTTP_MAX_HEADER_BYTES} bytes; "
                 "send fewer or shorter headers",
        }.get(error.code, f"the request is not valid HTTP/1.1: {error.body}; check what the client sends")
        body = json.dumps({"error": error.reason.lower().replace(" ", "_"), "message": message,
                           "details": {}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class DeadlineChannel(HTTPChannel):
    """A connection that remembers when the first byte of the request it is receiving arrived."""

    error_task_class = JSONErrorTask
    request_started = 0.0   # time.monotonic() of the first byte of `self.request`, the request still arriving

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.monotonic()
        return super().received(data)


class CollectorServer(TcpWSGIServer):
    """waitress's TCP server whose maintenance (once a second) also closes requests that arrive too slowly."""

    channel_class = DeadlineChannel
    header_timeout_s = defaults.HTTP_HEADER_TIMEOUT_S
    body_timeout_s = defaults.HTTP_BODY_TIMEOUT_S
    max_body_bytes = defaults.MAX_BODY_BYTES

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # the idle timeout
        late = 0
        clock = time.monotonic()
        for channel in list(self.active_channels.values()):
            request = getattr(channel, "request", None)
            if request is None or channel.will_close:
                continue
            limit = self.body_timeout_s if request.headers_finished else self.header_timeout_s
            if clock - channel.request_started > limit:
                channel.will_close = True  # the loop closes it on its next pass
                late += 1
        if late:
            log.warning("closed %d connection(s) whose request did not arrive in time (headers within "
                        "COLLECTOR_HTTP_HEADER_TIMEOUT_S=%g s, body within COLLECTOR_HTTP_BODY_TIMEOUT_S=%g s)",
                        late, self.header_timeout_s, self.body_timeout_s)


def redact_query(query: str, *, every_value: bool = False) -> str:
    """`query` with the values of token-like parameters (`every_value`: of all) replaced by `***`, cut to
    LOGGED_QUERY_CHARS."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = urlencode([(name, "***" if every_value or SECRET_PARAMETER.search(name) else value)
                       for name, value in pairs], safe="*")
    return shown if len(shown) <= LOGGED_QUERY_CHARS else f"{shown[:LOGGED_QUERY_CHARS]}…({len(shown)} chars)"


def access_logged(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """`app` writing one access line per request: client, method, path, query (redacted), status, time."""

    def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        status = ["-"]

        def start(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = line.split(" ", 1)[0]
            return start_response(line, headers, exc_info)

        try:
            return app(environ, start)
        finally:
            path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe=PATH_SAFE)
            # A callback link's query is a waiting job's input (a sign-in's code): none of it is logged.
            query = redact_query(environ.get("QUERY_STRING", ""), every_value=path == CALLBACK_PATH)
            access.info('%s "%s %s%s" %s %.1f ms', environ.get("REMOTE_ADDR", "-"), environ.get("REQUEST_METHOD"),
                        path, f"?{query}" if query else "", status[0], (time.perf_counter() - started) * 1000)

    return logged


def _allow_descriptors(needed: int) -> None:
    """Raise this process's open-file limit to `needed` where the hard limit allows; warn where it does not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning("the open-file limit (%d) is below what COLLECTOR_HTTP_CONNECTION_LIMIT needs (%d); "
                    "connections past it are refused: raise `ulimit -n` or lower the limit", target, needed)


def check_settings(config: Config) -> None:
    """`ConfigError` naming every HTTP setting that cannot work (a server with no thread answers nothing)."""
    wrong = [f"COLLECTOR_{name.upper()}={getattr(config, name)!r}"
             for name in ("http_threads", "http_connection_limit", "http_header_timeout_s", "http_body_timeout_s",
                          "http_idle_timeout_s", "max_body_bytes")
             if not getattr(config, name) > 0]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)}: must be more than 0; set a positive number or unset it")


def build_server(app: Any, *, host: str, port: int, config: Config) -> MultiSocketServer:
    """The server for `app` on host:port, listening but not yet serving (port 0 picks a free one)."""
    check_settings(config)
    adj = Adjustments(
        host=host, port=port, threads=config.http_threads, connection_limit=config.http_connection_limit,
        channel_timeout=max(1, round(config.http_idle_timeout_s)), cleanup_interval=1,
        max_request_header_size=defaults.HTTP_MAX_HEADER_BYTES,
        max_request_body_size=config.max_body_bytes + 1,  # waitress refuses a body of this size or more
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        ident="collector", expose_tracebacks=False,
    )
    _allow_descriptors(2 * config.http_connection_limit + 64)  # a socket each, a spill file for large bodies
    socket_map: dict[int, Any] = {}
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    servers = []
    for sockinfo in adj.listen:
        server = CollectorServer(access_logged(app), socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
        server.header_timeout_s = config.http_header_timeout_s
        server.body_timeout_s = config.http_body_timeout_s
        server.max_body_bytes = config.max_body_bytes
        servers.append(server)
    return MultiSocketServer(socket_map, adj, [(s.effective_host, s.effective_port) for s in servers], dispatcher)


def serve_until_signal(app: Any, *, host: str, port: int, config: Config,
                       on_ready: Callable[[int], None] | None = None) -> None:
    """Serve `app` until SIGINT or SIGTERM; requests running then get a few seconds to finish."""
    server = build_server(app, host=host, port=port, config=config)

    def stop(*_: object) -> None:
        # waitress's loop lets ExitNow through wherever it is raised (an ordinary exception inside a connection's
        # handler would only close that connection), and waitress raises it nowhere itself.
        raise wasyncore.ExitNow

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bound = int(server.effective_listen[0][1])
        log.info("API listening on http://%s:%d", host, bound)
        if on_ready:
            on_ready(bound)
        server.run()
    except wasyncore.ExitNow:
        log.info("API stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()  # waits up to 5 s for running requests, then closes every connection
