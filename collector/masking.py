"""Masking of secrets: in text (URL passwords, known values, auth headers), errors, and every log record."""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collector.errors import CollectorError

E = TypeVar("E", bound="CollectorError")

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
# Query parameters that would carry an API token: the API refuses them (400), and log lines show them masked.
QUERY_TOKEN_NAMES = frozenset({"token", "access_token", "api_token", "api_key", "apikey"})
_QUERY_TOKEN = re.compile(r"(?i)([?&](?:" + "|".join(sorted(QUERY_TOKEN_NAMES)) + r")=)[^&#\s'\"]+")
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer|basic|token)?\s*[^'\",\s}]+")


def mask_url(url: str) -> str:
    """`scheme://user:password@host` → `scheme://user:***@host`."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with every known secret value, URL password and auth header replaced by `***`."""
    for secret in sorted({v for s in secrets if s for v in variants(s)}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _QUERY_TOKEN.sub(lambda m: f"{m.group(1)}{MASK}", mask_url(text))
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{(m.group(2) or '') and m.group(2) + ' '}{MASK}", text)


def variants(secret: str) -> frozenset[str]:
    """A secret as it may show up in text: as is, URL-encoded, JSON-escaped, repr-escaped."""
    from urllib.parse import quote, quote_plus

    return frozenset(
        {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    )


def mask_value(value: Any, secrets: Iterable[str]) -> Any:
    """`value` (JSON-like) with every string masked by `mask_text`; dict keys too."""
    secrets = list(secrets)
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, dict):
        return {mask_value(k, secrets): mask_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, secrets) for v in value]
    return value


def secrets_in_body(body: Any, registry: Any) -> list[str]:
    """The values a raw job spec gives for secret settings (its platform's and its storage targets')."""
    from collector.registry import storage_backends

    if not isinstance(body, dict) or not isinstance(body.get("platform_id"), str):
        return []
    platform = registry.get(body["platform_id"])
    settings = body.get("settings")
    if platform is None or not isinstance(settings, dict):
        return []
    found: list[str] = []
    backends = storage_backends()
    for setting in platform.settings.settings:
        value = settings.get(setting.name)
        if setting.secret and isinstance(value, str):
            found.append(value)
        elif setting.type == "storage" and isinstance(value, dict) and isinstance(value.get("type"), str) \
                and value["type"] in backends:
            inner = value.get("settings")
            if isinstance(inner, dict):
                found += [inner[n] for n in backends[value["type"]].settings.secret_names()
                          if isinstance(inner.get(n), str)]
    return found


def mask_error(exc: E, secrets: Iterable[str]) -> E:
    """`exc` (a `CollectorError`) with its message and details masked in place."""
    secrets = list(secrets)
    if secrets:
        exc.message = mask_text(exc.message, secrets)
        exc.details = mask_value(exc.details, secrets)
        exc.args = (exc.message,)
    return exc


# Secret values of the jobs this process is running now: every log record is masked against them.
ACTIVE: dict[str, int] = {}


def remember(values: Iterable[str]) -> list[str]:
    """Mask `values` in every log line of this process until `forget(values)`; returns them."""
    kept = [v for v in values if v]
    for value in kept:
        ACTIVE[value] = ACTIVE.get(value, 0) + 1
    return kept


def forget(values: Iterable[str]) -> None:
    for value in values:
        left = ACTIVE.get(value, 0) - 1
        if left > 0:
            ACTIVE[value] = left
        else:
            ACTIVE.pop(value, None)


def install_log_masking() -> None:
    """Mask every log record this process creates (any logger, any handler): the secrets of running jobs,
    URL passwords and auth headers, in the message and in the formatted traceback."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "collector_masking", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is the logging module's to report, not ours
            return record
        secrets = list(ACTIVE)
        record.msg, record.args = mask_text(text, secrets), None
        if record.exc_info and record.exc_info[0] is not None:
            formatted = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = mask_text(formatted, secrets)
        return record

    factory.collector_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
