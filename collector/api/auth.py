"""Who may do what: every request's caller (a named token, or `anonymous` when the API is open), the scope each
route declares (`ROUTE_SCOPES`, the one place it is declared), and the guard against requests other sites send.

Checks, in order, on every request:
1. API tokens in the query string are refused (400): URLs end up in logs, proxies and browser history.
2. `GET /system/alive` (liveness) and `GET /system/ready` (readiness) are open to anyone; so is
   `GET /execution/callback`, whose link carries a job's one-use resume token (its `token` query field is that,
   not an API token).
3. Authentication: `Authorization: Bearer <token>` everywhere. Browsers cannot send a bearer token when they open
   a page, so the browser pages (GETs under `/rq` and `/docs`, and `/openapi.json` the docs page loads) also take
   basic auth with the token as the password; so do rq-dashboard's buttons, which post from such a page.
   Basic auth anywhere else is refused: a browser sends it by itself, to whichever site asks. The console
   (`/ui/`, and the event stream its pages open) also takes its session cookie (`sessions.py`); a console page
   without one redirects to the console's login page.
4. A POST/PUT/PATCH/DELETE must not come from another site (`Origin`, `Sec-Fetch-Site`: 403), and must carry
   `Content-Type: application/json` or an `X-Requested-With` header (400); a basic-auth one must show that it
   comes from this site (403). A page on another site can send neither header without the browser asking this
   service first (a CORS preflight, which it never allows), so it cannot act through a browser that is logged
   in, or that reaches an open API. Routes that change nothing (scope `read`, such as `POST /system/alive`)
   are exempt. A console form instead carries the session's CSRF token (403 without it), whatever its scope.
5. The route's scope: a token without it gets 403 naming the scope.

Every answer carries SAFETY_HEADERS: no other site may frame a page of the service.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, redirect, request, url_for
from werkzeug.exceptions import MethodNotAllowed

from collector.api.sessions import CONSOLE_OPEN, CONSOLE_SCOPES, SESSION_PAGES, csrf_valid, session_token
from collector.api.tokens import ANONYMOUS, FORM, SCOPES, Token, identify
from collector.errors import (
    BadRequestError,
    CollectorError,
    CrossSiteError,
    InsufficientScopeError,
    UnauthorizedError,
)
from collector.masking import QUERY_TOKEN_NAMES

log = logging.getLogger(__name__)

# The scope each route needs, by Flask endpoint. A route missing here needs `admin` (and says so in the log).
ROUTE_SCOPES: dict[str, str] = {
    "system.diagnostics": "read",
    "platforms.list_platforms": "read",
    "platforms.check": "submit",
    "execution.run": "submit",
    "execution.get": "read",
    "execution.events": "read",
    "execution.list_jobs": "read",
    "execution.cancel": "operate",
    "execution.resume": "operate",
    "execution.retry": "operate",
    "processes.get": "read",
    "processes.ack": "operate",
    "processes.rerun": "operate",
    "processes.run": "admin",
    "processes.finalize": "operate",
    "processes.list_processes": "read",
    "processes.inbox": "read",
    "schedules.list_all": "read",
    "schedules.get": "read",
    "schedules.create": "admin",
    "schedules.delete": "admin",
    "state.get": "read",
    "state.reset": "operate",
    "metrics.metrics": "read",
    "docs.openapi_json": "read",
    "docs.docs_page": "read",
    "docs.docs_asset": "read",
    "static": "read",
    "execution.stream": "read",
    "schedules.pause": "admin",
    "schedules.resume": "admin",
    **CONSOLE_SCOPES,
}
# Liveness and readiness probes carry no credentials; a callback link's own token (a job's resume token) is its proof.
OPEN_ENDPOINTS = frozenset({"system.alive", "system.ready", "execution.callback", *CONSOLE_OPEN})
LINK_ENDPOINTS = frozenset({"execution.callback"})  # its `token` query field is no API token: not refused
DASHBOARD = "/rq"  # rq-dashboard's routes, by path: reading needs `read`, its actions (requeue, delete, …) `admin`
DASHBOARD_READ, DASHBOARD_ACT = "read", "admin"
BROWSER_PAGES = ("/rq", "/docs", "/openapi.json")  # GETs a browser makes itself: basic auth is taken here
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REALM = 'realm="collector"'


def required_scope(endpoint: str | None, method: str, path: str) -> str:
    """The scope a request needs: from `ROUTE_SCOPES`, the dashboard's rule, or `read` for a path that is no route
    (so a 404 or 405 still needs a token)."""
    if _under(path, DASHBOARD):
        return DASHBOARD_READ if method in SAFE_METHODS else DASHBOARD_ACT
    if endpoint is None:
        return "read"
    scope = ROUTE_SCOPES.get(endpoint)
    if scope is None:
        log.warning("route %s declares no scope in auth.ROUTE_SCOPES; it needs admin until it does", endpoint)
        return "admin"
    return scope


def caller() -> str:
    """Who makes the current request (`flask.g.caller`): the token's name, or `anonymous` when the API is open."""
    return str(g.get("caller", ANONYMOUS))


def caller_may(scope: str) -> bool:
    """Whether the current request's token has `scope` (anyone has every scope when the API is open)."""
    token = g.get("token")
    return token is None or token.allows(scope)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _browser_page() -> bool:
    return request.method in SAFE_METHODS and any(_under(request.path, page) for page in BROWSER_PAGES)


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


LOOPBACK_ONLY = "collector.loopback_only"  # app.extensions: served on a loopback address only


def served_on(app: Flask, host: str) -> None:
    """Tell `app` the address it is served on. Open (no tokens) and on loopback, it then answers only requests
    addressed to a loopback name or address: a web page could otherwise reach it through a name of its own that
    resolves here (DNS rebinding), and its `Origin` would match that name."""
    app.extensions[LOOPBACK_ONLY] = is_loopback(host)


def _addressed_to_loopback() -> bool:
    """Whether the request's `Host` is `localhost` (or a name under it), or a loopback address."""
    host = request.host
    name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] if ":" in host else host
    name = name.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the service reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _answer(exc: CollectorError, *challenges: str) -> Response:
    response = jsonify(exc.to_dict())
    response.status_code = exc.status
    for challenge in challenges:
        response.headers.add("WWW-Authenticate", challenge)
    return response


def _unauthorized(reason: str) -> Response:
    exc = UnauthorizedError(
        f"{reason}; send `Authorization: Bearer <token>` with the secret part of a token in COLLECTOR_API_TOKENS "
        "(in a browser, on the pages under /rq and /docs: user name anything, password the token)"
    )
    basic = [f"Basic {REALM}"] if _browser_page() else []
    return _answer(exc, f"Bearer {REALM}", *basic)


def _query_token() -> Response | None:
    named = sorted({key for key in request.args if key.lower() in QUERY_TOKEN_NAMES})
    if not named:
        return None
    return _answer(BadRequestError(
        f"API tokens are not taken in the query string ({', '.join(named)}): URLs end up in logs, proxies and browser "
        "history. Send `Authorization: Bearer <token>` instead, and replace the token you sent, which may be logged",
        details={name: ["a token in the URL is refused"] for name in named},
    ))


def _authenticate(tokens: Sequence[Token]) -> tuple[Token | None, str] | Response:
    """The token the request proves (None in open mode) and how it was sent; or the 401 answer."""
    if not tokens:
        return None, "none"
    given, how = presented_credentials()
    if given is None and any(_under(request.path, page) for page in SESSION_PAGES):
        token = session_token(tokens)
        if token is not None:
            return token, "session"
        if request.method in SAFE_METHODS and _under(request.path, "/ui"):
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    if given is None:
        return _unauthorized("this endpoint needs a token")
    if how == "basic" and not (_browser_page() or _under(request.path, DASHBOARD)):
        return _unauthorized(f"basic auth is taken only by the browser pages (GET /rq, /docs), not by "
                             f"{request.method} {request.path}, so that a browser cannot be made to send it here")
    token = identify(given, tokens)
    if token is None:
        return _unauthorized("the token is not valid")
    return token, how


def _own_origin(origin: str) -> bool:
    """Whether `origin` (an `Origin` header) names this service's host, as the request's `Host` gives it."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (sandboxed frames, file: pages) and other schemes are foreign
    default = {"http": 80, "https": 443}[parts.scheme]
    theirs = parts.netloc.rpartition("@")[2].lower()  # keeps IPv6 brackets, as the Host header has them
    if port == default:
        theirs = theirs.removesuffix(f":{default}")
    ours = request.host.lower().removesuffix(":80").removesuffix(":443")
    # The scheme is left out: behind a proxy that ends TLS, the page is https and the request reaching us http.
    return theirs == ours


def _cross_site(how: str) -> Response | None:
    """A 403 for a state-changing request another site could have sent through a browser; None when it is fine."""
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if origin is not None and not _own_origin(origin):
        return _answer(CrossSiteError(
            f"{request.method} {request.path} came from a page of another site (Origin {origin[:100]!r}); requests "
            "that change something are taken only from this service's own pages and from clients that are no "
            "browser (which send no Origin)", details={"origin": [origin[:100]]},
        ))
    if fetch_site == "cross-site":
        return _answer(CrossSiteError(
            f"{request.method} {request.path} came from a page of another site (Sec-Fetch-Site: cross-site); "
            "requests that change something are taken only from this service's own pages and from clients"
        ))
    if request.blueprint == "console":
        return None if csrf_valid() else _answer(CrossSiteError(
            f"{request.method} {request.path} carries no valid CSRF token: console forms are taken only from the "
            "console's own pages (reload the page and send the form again)", details={"csrf_token": ["missing"]},
        ))
    if request.mimetype != "application/json" and not request.headers.get("X-Requested-With"):
        return _answer(BadRequestError(
            f"{request.method} {request.path} needs a JSON body (Content-Type: application/json) or the header "
            "`X-Requested-With` (any value, e.g. XMLHttpRequest): a form on another site can send neither, so "
            f"it cannot act through your browser (got Content-Type {request.mimetype or 'none'!r})",
        ))
    if how == "basic" and not (origin is not None or fetch_site == "same-origin"):
        return _answer(CrossSiteError(
            "a request authenticated by basic auth (which a browser sends by itself) that changes something must "
            "show it comes from this service's own page (Origin or Sec-Fetch-Site: same-origin, which browsers "
            "send); clients that are no browser send `Authorization: Bearer <token>`",
        ))
    return None


def _missing_scope(token: Token, scope: str) -> Response:
    have = [s for s in SCOPES if s in token.scopes]
    exc = InsufficientScopeError(
        f"token {token.name!r} (scopes: {', '.join(have)}) may not {request.method} {request.path}: that needs scope "
        f"{scope!r}. Use a token with it, or give this one the scope in COLLECTOR_API_TOKENS ({FORM})",
        details={"required_scope": scope, "token": token.name, "scopes": have},
    )
    return _answer(exc, f'Bearer {REALM}, error="insufficient_scope", scope="{scope}"')


def _refuse_dashboard_get_of_an_action() -> None:
    # Some rq-dashboard actions take GET as well as POST; a link or an <img> on any page could fire those.
    rule = request.url_rule
    if request.method in SAFE_METHODS and rule is not None and "POST" in (rule.methods or ()):
        raise MethodNotAllowed(valid_methods=["POST"], description="dashboard actions change Redis and take POST only")


# Sent with every answer: no page of the API (console, dashboard, docs) may be framed by another site, which
# could then click its buttons for a signed-in person, load plugins, change where its relative links point or post
# a form elsewhere, and no answer is read as a type it does not declare.
SAFETY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'; object-src 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def install_auth(app: Flask, tokens: Sequence[Token]) -> None:
    """Check every request of `app`: caller, scope, cross-site guard (open when `tokens` is empty)."""
    tokens = tuple(tokens)
    app.extensions["collector.auth"] = {"tokens": len(tokens), "names": [t.name for t in tokens]}
    app.extensions["collector.tokens"] = tokens  # the console's login page checks a token against them

    @app.before_request
    def authorize() -> Response | None:
        g.caller = ANONYMOUS
        if not tokens and app.extensions.get(LOOPBACK_ONLY) and not _addressed_to_loopback():
            return _answer(CrossSiteError(
                f"the API is open (no COLLECTOR_API_TOKENS) and served on this machine only, so it answers only "
                f"requests addressed to localhost or a loopback address, not to {request.host[:100]!r}: a web page "
                "can point a name of its own at this machine to reach it. Open it as http://localhost:PORT/, or "
                "configure API tokens to serve it under other names", details={"host": [request.host[:100]]}))
        refused = None if request.endpoint in LINK_ENDPOINTS else _query_token()
        if refused is not None or request.endpoint in OPEN_ENDPOINTS:
            return refused
        proved = _authenticate(tokens)
        if isinstance(proved, Response):
            return proved
        token, how = proved
        g.token = token
        if token is not None:
            g.caller = token.name
        scope = required_scope(request.endpoint, request.method, request.path)
        g.scope = scope  # what the route needs, for whatever runs after (a per-token submit limit)
        if _under(request.path, DASHBOARD):
            _refuse_dashboard_get_of_an_action()
        if request.method not in SAFE_METHODS and (scope != "read" or request.blueprint == "console"):
            refused = _cross_site(how)
            if refused is not None:
                return refused
        if token is not None and not token.allows(scope):
            return _missing_scope(token, scope)
        return None

    @app.after_request
    def safety_headers(response: Response) -> Response:
        for name, value in SAFETY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

