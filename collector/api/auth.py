"""Bearer-token authentication (`COLLECTOR_API_TOKENS`) of every endpoint but `GET /system/alive`.

Browsers cannot send a bearer token when they open a page, so the pages meant for them (the
dashboard at `/rq` and the API docs at `/docs`) also take HTTP basic auth with the token as the
password (any user name). The dashboard's mutating actions are guarded whether or not tokens are
set: they must be POSTs, and a POST authenticated by what a browser sends on its own (basic auth, or
nothing in open mode) must carry `X-Requested-With: XMLHttpRequest` — which the dashboard's own
scripts send and a cross-site form cannot — so another site cannot make a logged-in browser act.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence

from flask import Flask, Response, jsonify, request

from collector import defaults
from collector.errors import ConfigError

# (method, path) pairs anyone may call: liveness probes carry no credentials.
OPEN = frozenset({("GET", "/system/alive"), ("HEAD", "/system/alive")})
# Path prefixes of pages a browser opens: their 401 also offers basic auth, so the browser asks.
BROWSER_PREFIXES = ("/rq", "/docs")
# rq-dashboard views that change Redis (POST routes in rq_dashboard/web.py).
DASHBOARD_MUTATIONS = frozenset({
    "rq_dashboard.delete_job_view",
    "rq_dashboard.requeue_job_view",
    "rq_dashboard.requeue_all",
    "rq_dashboard.empty_queue",
    "rq_dashboard.compact_queue",
})
REALM = 'realm="collector"'


def parse_tokens(raw: str | None) -> tuple[str, ...]:
    """`COLLECTOR_API_TOKENS` as a tuple of tokens; `ConfigError` for a token too short to be safe."""
    tokens = tuple(t.strip() for t in (raw or "").split(",") if t.strip())
    short = [n for n, t in enumerate(tokens, 1) if len(t) < defaults.MIN_TOKEN_CHARS]
    if short:
        raise ConfigError(
            f"COLLECTOR_API_TOKENS: token(s) number {short} are shorter than {defaults.MIN_TOKEN_CHARS} characters; "
            "use long random tokens, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return tokens


def token_matches(given: str, tokens: Sequence[str]) -> bool:
    """Whether `given` is one of `tokens`, in time that does not depend on which one or how much matched."""
    # Digests have one length whatever was sent, so not even the token's length leaks through timing.
    given_digest = hashlib.sha256(given.encode()).digest()
    matched = False
    for token in tokens:  # every token is compared, so timing does not tell which one (or whether any) matched
        matched |= hmac.compare_digest(given_digest, hashlib.sha256(token.encode()).digest())
    return matched


def presented_credentials() -> tuple[str | None, str]:
    """The token the request presents and how: `("…", "bearer")`, `("…", "basic")` or `(None, "none")`."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "bearer"
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, "none"
        return decoded.partition(":")[2], "basic"
    return None, "none"


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the service reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": code, "message": message, "details": {}})
    response.status_code = status
    return response


def _unauthorized(reason: str) -> Response:
    response = _error(
        401,
        "unauthorized",
        f"{reason}; send `Authorization: Bearer <token>` with one of the tokens in COLLECTOR_API_TOKENS"
        " (in a browser: user name anything, password the token)",
    )
    response.headers["WWW-Authenticate"] = f"Bearer {REALM}"
    if request.path.startswith(BROWSER_PREFIXES):
        response.headers.add("WWW-Authenticate", f"Basic {REALM}")
    return response


def _guard_dashboard_mutation(how: str) -> Response | None:
    if request.endpoint not in DASHBOARD_MUTATIONS:
        return None
    if request.method != "POST":
        return _error(405, "method_not_allowed", "dashboard actions change Redis and take POST only")
    if how != "bearer" and request.headers.get("X-Requested-With") != "XMLHttpRequest":
        return _error(
            403,
            "forbidden",
            "dashboard actions need `X-Requested-With: XMLHttpRequest` (the dashboard's buttons send it) "
            "or a bearer token; this guards against other sites posting from your browser",
        )
    return None


def install_auth(app: Flask, tokens: Sequence[str]) -> None:
    """Check every request of `app` against `tokens` (open when there are none) and guard dashboard actions."""
    tokens = tuple(tokens)
    app.extensions["collector.auth"] = {"tokens": len(tokens)}

    @app.before_request
    def authenticate() -> Response | None:
        if (request.method, request.path) in OPEN:
            return None
        given, how = presented_credentials()
        if tokens:
            if given is None:
                return _unauthorized("this endpoint needs a token")
            if not token_matches(given, tokens):
                return _unauthorized("the token is not valid")
        return _guard_dashboard_mutation(how)
