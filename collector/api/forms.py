"""The console's forms: fields built from a platform's settings schema, and the posted form read back into a job spec
(or a resume's input), each value typed as the schema says so that validation answers as it does for the API."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

INPUTS = {"integer": "number", "number": "number", "date": "text", "datetime": "text", "string": "text"}
JSON_TYPES = ("object", "list")
SECRET_NAME = re.compile(r"pass|secret|token|key|code", re.IGNORECASE)


def form_fields(platform: Mapping[str, Any], connections: list[dict[str, str]], *,
                given: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One field per setting of `platform` (as `GET /platforms/get` describes it): the input to draw, its value
    (what was posted, else the default; never a secret's), its choices and hints."""
    given = given or {}
    fields = []
    for setting in platform["settings"]:
        name, kind = setting["name"], setting["type"]
        field: dict[str, Any] = {"name": name, "label": name, "required": setting["required"], "type": kind,
                                 "secret": setting["secret"], "hint": kind}
        default = setting.get("default")
        if setting["secret"]:
            field.update(input="password", value="")
        elif setting.get("choices"):
            field.update(input="select", choices=[c for c in setting["choices"] if c is not None])
        elif name == "connection" and connections:
            field.update(input="select", choices=[c["name"] for c in connections],
                         hint="a connection the operator defined")
        elif kind == "boolean":
            field.update(input="checkbox", checked=bool(default) if name not in given else given[name] == "on")
        elif kind in JSON_TYPES:
            field.update(input="textarea", hint=f"{kind} as JSON")
        elif kind == "storage":
            field.update(input="storage", backends=sorted(setting.get("backends") or {}),
                         hint="where the rows go: a backend and its settings as JSON (or a connection's name in them)")
        else:
            field.update(input=INPUTS.get(kind, "text"), step="1" if kind == "integer" else "any")
        if "value" not in field and field["input"] not in ("checkbox", "storage"):
            shown = default if not isinstance(default, dict | list) else json.dumps(default)
            field["value"] = given.get(name, "" if shown is None else str(shown))
        if field["input"] == "storage":
            field.update(kind_value=given.get(f"{name}.type", ""), value=given.get(f"{name}.settings", ""))
        fields.append(field)
    return fields


def spec_from_form(platform: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """The job spec a submit form describes. Empty optional fields are left out (their defaults apply); a value
    that is not what its type asks for is passed on as written, so that validation names the field."""
    settings: dict[str, Any] = {}
    for setting in platform["settings"]:
        name, kind = setting["name"], setting["type"]
        if kind == "boolean" and not setting.get("choices"):
            settings[name] = form.get(name) == "on"
            continue
        if kind == "storage":
            backend = form.get(f"{name}.type", "")
            if backend:
                settings[name] = {"type": backend, "settings": _json(form.get(f"{name}.settings", "") or "{}")}
            continue
        raw = form.get(name, "")
        if raw == "" and not setting["required"]:
            continue
        settings[name] = _typed(kind, raw)
    spec: dict[str, Any] = {"platform_id": platform["id"], "settings": settings}
    if form.get("_id"):
        spec["_id"] = form["_id"]
    return spec


def _typed(kind: str, raw: str) -> Any:
    if kind == "integer" and re.fullmatch(r"-?\d{1,18}", raw.strip()):
        return int(raw)
    if kind == "number":
        try:
            return float(raw) if "." in raw or "e" in raw.lower() else int(raw)
        except ValueError:
            return raw
    if kind in JSON_TYPES:
        return _json(raw)
    return raw


def _json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # validation says what the field wants


def field_errors(details: Mapping[str, Any], names: Collection[str] = ()) -> dict[str, str]:
    """A 422's details by form field: `settings.rows` → `rows`, `settings.storage.settings.path` → `storage`; a
    platform's own check on `settings` that names a setting (`rows=-3 is negative`) goes to that setting."""
    shown: dict[str, str] = {}
    for path, messages in details.items():
        parts = str(path).split(".")
        for text in messages if isinstance(messages, list) else [json.dumps(messages)]:
            name = parts[1] if parts[0] == "settings" and len(parts) > 1 else parts[0]
            named = re.match(r"(\w+)\s*=", str(text))
            if path == "settings" and named and named.group(1) in names:
                name = named.group(1)
            text = f"{'.'.join(parts[2:])}: {text}" if parts[0] == "settings" and len(parts) > 2 else str(text)
            shown[name] = f"{shown[name]}; {text}" if name in shown else text
    return shown


def resume_fields(waiting: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fields of a waiting job's resume form: one per input it expects (or one JSON field `input`)."""
    expects = waiting.get("expects") or {}
    if not expects:
        return [{"name": "input", "label": waiting.get("name") or "input", "hint": "the input, as JSON or text",
                 "input": "textarea"}]
    return [{"name": name, "label": name, "hint": str(what),
             "input": "password" if SECRET_NAME.search(name) else "text"} for name, what in expects.items()]


def resume_input(waiting: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """The input a posted resume form gives: the expected fields as text, or the one JSON `input`."""
    if waiting.get("expects"):
        return {name: form.get(name, "") for name in waiting["expects"]}
    raw = form.get("input", "")
    value = _json(raw) if raw.strip().startswith(("{", "[")) else raw
    return value if isinstance(value, dict) else {"value": value}
