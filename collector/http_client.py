"""An HTTP client for platforms: retries with backoff on 408/429/5xx and connection errors, honouring
Retry-After, credentials kept to the first origin, and error texts with secrets masked.

In a job, each request first takes a token of the job's rate limits (the platform's `RATE_LIMIT`, the connection's
`rate_limit`: `collector.rates`), waiting for its turn; a 429 or 503 with `Retry-After` empties those buckets until
then, for every pool, and the retry waits for the next token instead of sleeping on its own.

Every connection goes through the egress policy (`collector.egress`): the host is resolved and checked and the
socket connected to the checked address, on the first request and on each redirect; only http and https
redirects are followed, at most `EGRESS_MAX_REDIRECTS` of them; a body over `COLLECTOR_MAX_RESPONSE_BYTES` fails
the request. Environment proxies are not used: the address checked must be the address connected to."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import functools
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from collector import egress, rates
from collector.errors import EgressError, FatalError, TransientError
from collector.masking import mask_text

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACK_OFF_STATUSES = frozenset({429, 503})  # with Retry-After: the source's rate limit, shared by every pool
MAX_BACKOFF_S = 60.0        # exponential backoff stops growing here
MAX_RETRY_AFTER_S = 300.0   # a server asking for a longer pause fails the attempt now instead of parking the worker
BODY_SNIPPET = 300          # characters of an error response quoted in the message
USER_AGENT = "collector/0.1"
# Headers the client sets itself, which a job may not give: `Host` would send a connection's credentials to another
# site behind the same address; the others describe the connection and the body.
CLIENT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
                            "trailer", "upgrade", "proxy-authorization", "proxy-connection"})


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


def endpoint(url: str) -> tuple[str, int] | None:
    """The host and port `url` is reached on (the scheme's default port when it names none); None for a URL
    that is not http(s) or whose port is not a number."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if scheme not in egress.SCHEMES or not parts.hostname:
        return None
    return parts.hostname.rstrip(".").lower(), port or egress.DEFAULT_PORTS[scheme]


def within(url: str, base: str) -> bool:
    """Whether `url` is `base` or under it: the same scheme, host and port, and a path inside the base's path
    (none of its segments `..`, written plainly or percent-encoded)."""
    if urllib.parse.urlsplit(url).scheme.lower() != urllib.parse.urlsplit(base).scheme.lower():
        return False
    place = endpoint(url)
    if place is None or place != endpoint(base):
        return False
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path).replace("\\", "/")
    if ".." in path.split("/"):
        return False
    root = urllib.parse.unquote(urllib.parse.urlsplit(base).path).rstrip("/")
    return path == root or path.startswith(root + "/")


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows http(s) redirects, at most `max_redirections`, and drops the Authorization header (and the other
    `private` ones) when one leads to another host, or where `keeps_private` says the new URL may not have them.
    Any other scheme (file:, ftp:, ...) or one redirect too many is an `EgressError`."""

    def __init__(self, max_redirections: int, private: Iterable[str] = (),
                 keeps_private: Callable[[str], bool] = lambda url: True) -> None:
        super().__init__()
        self.max_redirections = max_redirections
        self.private = frozenset({"authorization", *(name.lower() for name in private)})
        self.keeps_private = keeps_private

    def http_error_302(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def]
        target = headers.get("location") or headers.get("uri")
        if target:
            newurl = urllib.parse.urljoin(req.full_url, target)
            if urllib.parse.urlsplit(newurl).scheme.lower() not in egress.SCHEMES:
                fp.close()
                raise EgressError(f"{req.full_url} redirected to {newurl!r}; only http and https redirects are "
                                  "followed")
            if len(getattr(req, "redirect_dict", {})) >= self.max_redirections:
                fp.close()
                raise EgressError(f"{req.full_url} redirected more than {self.max_redirections} times; "
                                  "ask the source for the final URL")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and (origin(newurl) != origin(req.full_url) or not self.keeps_private(newurl)):
            for name in [n for n in new.headers if n.lower() in self.private]:
                new.remove_header(name)
        return new


class CheckedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket goes to an address the egress policy checked."""

    def __init__(self, *args: Any, policy: egress.EgressPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = policy.connect


class CheckedHTTPSConnection(http.client.HTTPSConnection):
    """The same for HTTPS: the checked address is connected to, the host name still verified by TLS."""

    def __init__(self, *args: Any, policy: egress.EgressPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = policy.connect


PolicyFor = Callable[[str], egress.EgressPolicy]  # the policy a request to a URL is checked by


class CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy_for: PolicyFor) -> None:
        super().__init__()
        self.policy_for = policy_for

    def http_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(functools.partial(CheckedHTTPConnection, policy=self.policy_for(req.full_url)), req)


class CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy_for: PolicyFor) -> None:
        super().__init__()
        self.policy_for = policy_for

    def https_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(functools.partial(CheckedHTTPSConnection, policy=self.policy_for(req.full_url)), req,
                            context=self._context)


def build_opener(policy: egress.EgressPolicy, *, trusted: bool, private: Iterable[str] = (),
                 policy_for: PolicyFor | None = None, keeps_private: Callable[[str], bool] = lambda url: True,
                 ) -> urllib.request.OpenerDirector:
    """An opener for http and https only (no file:, ftp:, data: or proxies); `trusted` skips the address check.
    `policy_for`: the policy each request's URL is checked by (else `policy` for all); `keeps_private`: whether a
    redirect's URL may have the private headers."""
    opener = urllib.request.OpenerDirector()
    policy_for = policy_for or (lambda url: policy)
    connections: list[urllib.request.BaseHandler] = (
        [urllib.request.HTTPHandler(), urllib.request.HTTPSHandler()] if trusted
        else [CheckedHTTPHandler(policy_for), CheckedHTTPSHandler(policy_for)]
    )
    for handler in (*connections, SameOriginRedirects(policy.max_redirects, private, keeps_private),
                    urllib.request.UnknownHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


class HttpClient:
    """GET/POST with a timeout, retrying 408/429/5xx and connection errors; errors name no secret.

    `trusted_base` is the base URL of a destination the operator defined (a named connection): a URL under it
    (the same scheme, host and port, a path inside the base's) is reached whatever its address, and only such a URL
    gets the private headers (the connection's credentials). Any other URL, a next link or a redirect included, is
    checked as a job's own URL would be, and sent without them. `trusted=True` skips the address check for every
    host (tests and tools). Schemes, redirect count and response size stay bounded either way."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        secrets: list[str],
        max_retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
        private_headers: Iterable[str] = (),
        trusted: bool = False,
        trusted_base: str | None = None,
        rate_buckets: Mapping[str, rates.Rate] | None = None,
    ) -> None:
        self.headers = {"User-Agent": USER_AGENT, **headers}
        self.secrets = [s for s in secrets if s]
        self.max_retries, self.backoff_s, self.timeout_s = max_retries, backoff_s, timeout_s
        self.sleep, self.on_retry = sleep, on_retry
        # Headers that, like Authorization, only go to `auth_origin` (an operator connection's own headers).
        self.private = frozenset({"authorization", *(name.lower() for name in private_headers)})
        policy = egress.current()
        self.auth_origin: tuple[str, str, int | None] | None = None
        self.auth_base = trusted_base
        policy_for: PolicyFor | None = None
        trusted_place = endpoint(trusted_base) if trusted_base else None
        if trusted_base and trusted_place:  # the operator's connection: its own host and port, under its base
            widened = dataclasses.replace(policy, allow_host_ports=policy.allow_host_ports | {trusted_place})
            policy_for = functools.partial(_policy_within, trusted_base, widened, policy)
        self.max_bytes = policy.max_response_bytes
        self.opener = build_opener(policy, trusted=trusted, private=self.private, policy_for=policy_for,
                                   keeps_private=self._may_have_private)
        # Buckets each request takes a token of besides the job's own (an operator connection's rate_limit).
        self.rate_buckets: dict[str, rates.Rate] = dict(rate_buckets or {})

    def mask(self, text: str) -> str:
        return mask_text(text, self.secrets)

    def _may_have_private(self, url: str) -> bool:
        """Whether a request to `url` may carry the private headers: only to the origin they were given for, and
        only under the base URL of an operator connection."""
        if self.auth_origin is not None and origin(url) != self.auth_origin:
            return False
        return self.auth_base is None or within(url, self.auth_base)

    def _headers(self, url: str, body: bytes | None) -> dict[str, str]:
        headers = dict(self.headers)
        if not self._may_have_private(url):  # credentials only go where they were given for
            headers = {k: v for k, v in headers.items() if k.lower() not in self.private}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def probe(self, url: str, *, method: str = "GET", body: bytes | None = None) -> str:
        """One request, no retry, the body left unread: a connection check's `"GET <url> answered HTTP 200 OK"`.
        The egress policy, redirect rules and credentials apply as for `request`; `FatalError` on a 4xx (a wrong
        token says so), `TransientError` on a 5xx, a timeout or a connection that fails, all with the reason."""
        request = urllib.request.Request(url, data=body, headers=self._headers(url, body), method=method)
        try:
            with self.opener.open(request, timeout=self.timeout_s) as response:
                return self.mask(f"{method} {url} answered HTTP {response.status} {response.reason}")
        except EgressError as exc:
            raise EgressError(self.mask(exc.message)) from None
        except urllib.error.HTTPError as exc:
            snippet = read_quietly(exc)
            what = f"{method} {url} answered HTTP {exc.code} {exc.reason}: {snippet.strip()!r}"
            if exc.code in RETRY_STATUSES:
                raise TransientError(self.mask(what)) from None
            hint = " (check the token, username or password)" if exc.code in (401, 403) else ""
            raise FatalError(self.mask(what + hint)) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TransientError(self.mask(f"{method} {url} failed: {type(exc).__name__}: {reason}")) from None

    def request(self, url: str, *, method: str = "GET", body: bytes | None = None) -> tuple[bytes, Any]:
        """The response body and headers; `TransientError` once retries are spent, `FatalError` on other 4xx."""
        headers = self._headers(url, body)
        for attempt in range(self.max_retries + 1):
            wait = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
            throttle = rates.current()
            taken = throttle.take(self.rate_buckets) if throttle is not None else []
            backed_off = False
            request = urllib.request.Request(url, data=body, headers=headers, method=method)
            try:
                with self.opener.open(request, timeout=self.timeout_s) as response:
                    return self._read(response, f"{method} {url}"), response.headers
            except EgressError as exc:  # a redirect's URL may carry the token (token_param)
                raise EgressError(self.mask(exc.message)) from None
            except urllib.error.HTTPError as exc:
                snippet = read_quietly(exc)
                what = f"{method} {url} answered HTTP {exc.code} {exc.reason}: {snippet.strip()!r}"
                if exc.code not in RETRY_STATUSES:
                    hint = " (check the token, username or password)" if exc.code in (401, 403) else ""
                    raise FatalError(self.mask(what + hint)) from None
                asked = retry_after(exc.headers.get("Retry-After"))
                if asked is not None and taken and throttle is not None and exc.code in BACK_OFF_STATUSES:
                    throttle.back_off(taken, asked)  # the next token, this retry's included, comes after it
                    backed_off = True
                if asked is not None and asked > MAX_RETRY_AFTER_S:
                    raise TransientError(self.mask(f"{what}; it asks to wait {asked:.0f} s, try later")) from None
                wait = wait if asked is None else asked
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                what = f"{method} {url} failed: {type(exc).__name__}: {reason}"
            if attempt == self.max_retries:
                raise TransientError(self.mask(f"{what} (gave up after {attempt + 1} attempts)")) from None
            if self.on_retry is not None:
                self.on_retry(self.mask(f"{what}; retrying in {wait:.1f} s"))
            if not backed_off:  # else the rate limit's bucket holds the retry back until the back-off ends
                self.sleep(wait)
        raise AssertionError("unreachable")

    def _read(self, response: Any, what: str) -> bytes:
        """The body, or `EgressError` once it is over the size cap (told by Content-Length, or read)."""
        declared = response.headers.get("Content-Length")
        over = declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes
        body = b"" if over else response.read(self.max_bytes + 1)
        if over or len(body) > self.max_bytes:
            raise EgressError(self.mask(
                f"{what} answered more than {self.max_bytes} bytes, the largest response a job reads; ask for "
                "less (a smaller page) or have the operator raise COLLECTOR_MAX_RESPONSE_BYTES"))
        return body


def _policy_within(base: str, widened: egress.EgressPolicy, policy: egress.EgressPolicy,
                   url: str) -> egress.EgressPolicy:
    """`widened` (the connection's host and port allowed) for a URL under `base`, `policy` for any other."""
    return widened if within(url, base) else policy


def read_quietly(error: urllib.error.HTTPError) -> str:
    """The start of an error response's body, and the response closed (an open one leaks its socket)."""
    try:
        return error.read(BODY_SNIPPET * 4).decode("utf-8", "replace")[:BODY_SNIPPET]
    except (OSError, http.client.HTTPException, AttributeError):
        return ""
    finally:
        error.close()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
