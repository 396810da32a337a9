"""Hostile-input limits on request bodies: strict JSON, bounded depth, numbers and string lengths."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from collector.errors import BadRequestError

INT_MIN, INT_MAX = -(2**63), 2**63 - 1   # what every consumer (Redis, SQL BIGINT, JSON parsers) can hold
# JSON may escape half of a UTF-16 pair alone ("\ud800"); Python keeps it, and UTF-8 cannot encode it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _refused(reason: str) -> BadRequestError:
    """What the JSON parser's hooks raise: the parser lets it through to the caller as it is."""
    return BadRequestError(f"the body was refused: {reason}")


def _parse_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # Python refuses to parse absurdly long digit strings
        raise _refused(f"the integer {text[:20]}… is too long; integers must lie in [-2**63, 2**63-1]") from None
    if not INT_MIN <= value <= INT_MAX:
        raise _refused(f"the integer {text[:30]} is out of range; integers must lie in [-2**63, 2**63-1]")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _refused(f"the number {text[:30]} overflows a 64-bit float; send a finite number")
    return value


def _reject_constant(name: str) -> None:
    raise _refused(f"{name} is not valid JSON; send a finite number or null")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _refused(f"the key {key[:80]!r} appears twice in one object; send each key once")
        result[key] = value
    return result


def parse_body(raw: bytes, *, max_depth: int, max_string_chars: int) -> Any:
    """`raw` as JSON, or `BadRequestError` saying what is wrong with it and how to send it instead."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the body is not valid UTF-8; send UTF-8 encoded JSON") from None
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
        )
    except RecursionError:
        raise BadRequestError(f"the body is nested too deeply; at most {max_depth} levels are accepted") from None
    except ValueError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}; send a JSON object") from None
    check_shape(value, max_depth=max_depth, max_string_chars=max_string_chars)
    return value


def _refuse_surrogate(text: str, where: str, path: str) -> None:
    found = LONE_SURROGATE.search(text)
    if found:
        raise BadRequestError(
            f"{where} holds the lone surrogate \\u{ord(found.group()):04x}, which is not a character; "
            "send valid Unicode (a \\ud800-\\udbff escape must be followed by its \\udc00-\\udfff pair)",
            details={"path": path},
        )


def check_shape(value: Any, *, max_depth: int, max_string_chars: int) -> None:
    """Refuse nesting deeper than `max_depth`, strings (values or keys) longer than `max_string_chars`, and
    strings that are not Unicode text (lone surrogates)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:  # iterative: a deep body must not exhaust the interpreter's stack here either
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise BadRequestError(
                    f"the body is nested deeper than {max_depth} levels (at {path or 'the top'}); flatten it",
                    details={"path": path, "max_depth": max_depth},
                )
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and len(key) > max_string_chars:
                    raise BadRequestError(
                        f"an object key at {path or 'the top'} is {len(key)} characters long; "
                        f"keys and strings may have at most {max_string_chars}",
                        details={"path": path, "max_string_chars": max_string_chars},
                    )
                if isinstance(key, str):
                    _refuse_surrogate(key, f"an object key at {path or 'the top'}", path)
                stack.append((child, child_path[:200], depth + 1))
        elif isinstance(item, str):
            if len(item) > max_string_chars:
                raise BadRequestError(
                    f"the string at {path} is {len(item)} characters long; at most {max_string_chars} are accepted",
                    details={"path": path, "max_string_chars": max_string_chars},
                )
            _refuse_surrogate(item, f"the string at {path or 'the top'}", path)
