"""Masking of secrets: in text (URL passwords, known values, auth headers), JSON data, errors, and every log record."""

from __future__ import annotations

import json
import logging
import re
import string
import traceback
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from collector import defaults

if TYPE_CHECKING:
    from collector.errors import CollectorError

E = TypeVar("E", bound="CollectorError")

MASK = "***"
# The password runs to the last `@` before the host (clients, redis-py among them, take a password with an `@` left
# unencoded, and a pattern stopping at the first `@` would show the rest of it), within the quotes of the text it
# is written in. The scheme is at most 32 characters: tried from every letter of a long word, an unbounded one took
# time quadratic in the word (a 64 kB query string in an access line: seconds).
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]{0,31}://)(?P<user>[^:/\s]*):(?P<pw>[^/\s\"']+)@")
# Query parameters that would carry an API token: the API refuses them (400), and `mask_url` masks their values.
QUERY_TOKEN_NAMES = frozenset({"token", "access_token", "api_token", "api_key", "apikey"})
# Any query parameter, and the names (besides those above) whose value `mask_url` masks. A name stops at the next
# `?` or `&` as well as at `=`: tried from every `?` of a long run of them, a name that ran on past them took time
# quadratic in the run (80,000 of them in a submitted URL: 9 s of an API process, every thread of it waiting).
# bench/masking_bench.py checks every pattern here for linear time on such runs.
_QUERY_PARAMETER = re.compile(r"([?&]([^=&?#\s'\"]*+)=)[^&#\s'\"]++")
_PASSWORD_NAME = re.compile(r"(?i)passw|pwd|secret")
# Possessive blanks: with plain `\s*` twice in a row, a long run of blanks after `authorization:` took quadratic time.
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*+[:=]\s*+['\"]?)(bearer|basic|token)?\s*+[^'\",\s}]+")
# What JSON text outside strings is made of (numbers, true/false/null, NaN/Infinity, punctuation, spaces): a
# secret written only with these could match there, so `mask_json` checks that a place it found is in a string.
_OUTSIDE_STRINGS = frozenset("0123456789+-.eE,:[]{} \t\r\ntruefalsnNaIiy")


def mask_url(url: str) -> str:
    """`scheme://user:password@host` → `scheme://user:***@host`, and the value of a query parameter that carries a
    token (`?token=`, `?api_key=`, ...) or is named like a password (`?password=`, redis-py takes one there) →
    `***`."""
    url = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    return _QUERY_PARAMETER.sub(_masked_parameter, url)


def _masked_parameter(match: re.Match[str]) -> str:
    name = match[2]
    secret = name.lower() in QUERY_TOKEN_NAMES or _PASSWORD_NAME.search(name)
    return f"{match[1]}{MASK}" if secret else match[0]


def maskable(secrets: Iterable[str]) -> list[str]:
    """The secret values worth searching for: each once, none shorter than `SECRET_MASK_MIN_CHARS` (a one-letter
    secret would turn every line and cell it occurs in into `***`, and is guessed as easily as it is masked)."""
    return [s for s in dict.fromkeys(secrets) if isinstance(s, str) and len(s) >= defaults.SECRET_MASK_MIN_CHARS]


def needles(secrets: Iterable[str]) -> list[str]:
    """Every form of every maskable secret to replace, longest first (so a secret that holds another goes whole)."""
    return sorted({v for s in maskable(secrets) for v in variants(s)}, key=len, reverse=True)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """Text with every known secret value (in each spelling `variants` knows) replaced by `***`, and nothing else."""
    for secret in needles(secrets):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


# How a secret's characters go out as bytes: UTF-8 (URLs percent-encode it, bodies) and Latin-1 (HTTP header values).
WIRE_ENCODINGS = ("utf-8", "latin-1")


def mask_secret_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """`data` with every known secret value (in each spelling `variants` knows), as UTF-8 and as Latin-1 bytes,
    replaced by `***`: for bytes a server sends back, before they are decoded. Read in another single-byte encoding,
    a secret's non-ASCII characters come out respelled, past `mask_secrets`, and could be spelled back."""
    return _replaced(data, _byte_needles(needles(secrets)), MASK.encode())


def _byte_needles(found: Iterable[str]) -> list[bytes]:
    """The byte forms of `found` (UTF-8 and Latin-1 where it has one), in the order given."""
    forms: list[bytes] = []
    for secret in found:
        for encoding in WIRE_ENCODINGS:
            try:
                forms.append(secret.encode(encoding))
            except UnicodeEncodeError:
                continue
    return list(dict.fromkeys(forms))


def _replaced(data: Any, found: Iterable[Any], mask: Any) -> Any:
    for needle in found:
        if needle in data:
            data = data.replace(needle, mask)
    return data


def masked_rows(rows: Iterable[Mapping[str, Any]], secrets: Iterable[str]) -> Iterable[Mapping[str, Any]]:
    """`rows` as a storage target stores them: every text (keys and values, in nested mappings and lists too) with
    the secret values masked as `mask_secrets` masks them, and bytes as `mask_secret_bytes` does; the rows as they
    are when there is no secret to mask."""
    found = needles(secrets)
    if not found:
        return rows
    found_bytes, mask_bytes = _byte_needles(found), MASK.encode()

    def cell(value: Any) -> Any:
        if isinstance(value, str):
            return _replaced(value, found, MASK)
        if isinstance(value, bytes):
            return _replaced(value, found_bytes, mask_bytes)
        if isinstance(value, Mapping):
            return {cell(k): cell(v) for k, v in value.items()}
        if type(value) in (list, tuple):
            return type(value)(cell(v) for v in value)
        return value

    return ({cell(k): cell(v) for k, v in row.items()} for row in rows)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with every known secret value, URL password, token or password query parameter and auth header replaced
    by `***`."""
    text = mask_url(mask_secrets(text, secrets))
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


def mask_json(payload: str, secrets: Iterable[str]) -> str:
    """A JSON document as `json.dumps` wrote it, with every form of every secret (`variants`) inside its strings,
    keys included, at any depth, replaced by `***`; numbers and literals (`1234`, `true`) are left alone.

    Cheap for large datasets: nothing is decoded. Each form is searched for as it shows inside a JSON string
    (escaped the same way), with C-level substring scans; none found (the usual case) costs one scan per form.
    A form found is replaced where it starts a character of the text (not inside an escape such as `\\n` or
    `\\u00e9`), and, for a form of characters that also occur outside strings, only inside a string.
    """
    for form in needles(secrets):
        for escaped in _json_forms(form):
            if escaped in payload:
                payload = _replace_in_strings(payload, escaped)
    return payload


def _json_forms(text: str) -> set[str]:
    """`text` as it shows inside a JSON string: escaped as `json.dumps` does by default (`\\u00e9`), or with
    non-ASCII characters as they are (`ensure_ascii=False`). Neither holds a bare `"`, so a form that starts
    inside a string ends in the same string."""
    return {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}


def _replace_in_strings(payload: str, escaped: str) -> str:
    """`payload` with `escaped` replaced by `***` where it is text of a JSON string."""
    anywhere = not _OUTSIDE_STRINGS.issuperset(escaped)  # a character no number or literal has: in a string
    if anywhere and "\\" + escaped not in payload and not (
            escaped[0] in string.hexdigits and re.search(r"\\u[0-9a-fA-F]{0,3}" + re.escape(escaped), payload)):
        return payload.replace(escaped, MASK)  # the usual case: no escape sequence runs into any of them
    parts: list[str] = []
    start = counted = quotes = 0
    at = payload.find(escaped)
    while at != -1:
        keep = not _starts_a_character(payload, at)
        if not keep and not anywhere:
            quotes += _string_quotes(payload, counted, at)
            counted = at
            keep = quotes % 2 == 0  # an even number of string quotes before it: outside any string
        if keep:
            at = payload.find(escaped, at + 1)
            continue
        parts += (payload[start:at], MASK)
        start = at + len(escaped)
        at = payload.find(escaped, start)
    return "".join(parts) + payload[start:] if parts else payload


def _escapes_next(payload: str, end: int) -> bool:
    """Whether the run of backslashes ending just before `end` is of odd length: its last one starts an escape."""
    start = end
    while start > 0 and payload[start - 1] == "\\":
        start -= 1
    return (end - start) % 2 == 1


def _starts_a_character(payload: str, at: int) -> bool:
    """Whether `payload[at]` begins a character of JSON text, not the middle of `\\n` or `\\u00e9`."""
    if _escapes_next(payload, at):
        return False
    return not any(payload[s + 1] == "u" and payload[s] == "\\" and _escapes_next(payload, s + 1)
                   for s in range(max(0, at - 5), at - 1))


def _string_quotes(payload: str, begin: int, end: int) -> int:
    """How many `"` in `payload[begin:end]` open or close a string (not escaped by an odd run of backslashes).
    `payload[begin]` must not be a backslash, so no run before a quote reaches out of the range."""
    escaped = 0
    run = 1
    while (at_least := payload.count("\\" * run + '"', begin, end)) > 0:
        if run % 2:
            escaped += at_least - payload.count("\\" * (run + 1) + '"', begin, end)
        run += 1
    return payload.count('"', begin, end) - escaped


def given_secrets(value: Any) -> list[str]:
    """The texts a value given for a secret setting holds: the string, or each string of a secret mapping."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, str)]
    return []


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
