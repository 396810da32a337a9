"""An HTTP client for platforms: retries with backoff on 408/429/5xx and connection errors, honouring
Retry-After, credentials kept to the first origin, and error texts with secrets masked."""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from collector.errors import FatalError, TransientError
from collector.masking import mask_text

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0        # exponential backoff stops growing here
MAX_RETRY_AFTER_S = 300.0   # a server asking for a longer pause fails the attempt now instead of parking the worker
BODY_SNIPPET = 300          # characters of an error response quoted in the message
USER_AGENT = "collector/0.1"


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but drops the Authorization header (and the other `private` ones) when one leads to
    another host."""

    def __init__(self, private: Iterable[str] = ()) -> None:
        super().__init__()
        self.private = frozenset({"authorization", *(name.lower() for name in private)})

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(newurl) != origin(req.full_url):
            for name in [n for n in new.headers if n.lower() in self.private]:
                new.remove_header(name)
        return new


class HttpClient:
    """GET/POST with a timeout, retrying 408/429/5xx and connection errors; errors name no secret."""

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
    ) -> None:
        self.headers = {"User-Agent": USER_AGENT, **headers}
        self.secrets = [s for s in secrets if s]
        self.max_retries, self.backoff_s, self.timeout_s = max_retries, backoff_s, timeout_s
        self.sleep, self.on_retry = sleep, on_retry
        # Headers that, like Authorization, only go to `auth_origin` (an operator connection's own headers).
        self.private = frozenset({"authorization", *(name.lower() for name in private_headers)})
        self.opener = urllib.request.build_opener(SameOriginRedirects(self.private))
        self.auth_origin: tuple[str, str, int | None] | None = None

    def mask(self, text: str) -> str:
        return mask_text(text, self.secrets)

    def request(self, url: str, *, method: str = "GET", body: bytes | None = None) -> tuple[bytes, Any]:
        """The response body and headers; `TransientError` once retries are spent, `FatalError` on other 4xx."""
        headers = dict(self.headers)
        if self.auth_origin is not None and origin(url) != self.auth_origin:
            # credentials only go to the host they were given for
            headers = {k: v for k, v in headers.items() if k.lower() not in self.private}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(self.max_retries + 1):
            wait = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
            request = urllib.request.Request(url, data=body, headers=headers, method=method)
            try:
                with self.opener.open(request, timeout=self.timeout_s) as response:
                    return response.read(), response.headers
            except urllib.error.HTTPError as exc:
                snippet = read_quietly(exc)
                what = f"{method} {url} answered HTTP {exc.code} {exc.reason}: {snippet.strip()!r}"
                if exc.code not in RETRY_STATUSES:
                    hint = " (check the token, username or password)" if exc.code in (401, 403) else ""
                    raise FatalError(self.mask(what + hint)) from None
                asked = retry_after(exc.headers.get("Retry-After"))
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
            self.sleep(wait)
        raise AssertionError("unreachable")


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
