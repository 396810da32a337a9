"""Which of the operator's webhook connections a job tells when it ends or waits: the spec's `notify` list."""

from __future__ import annotations

from typing import Any

from collector import defaults
from collector.errors import SettingError
from collector.resources import reach

# What a target may be told of: the ends of a job a person acts on, and its waits for a person; a step process's
# targets also hear of its step changes (and `finished`/`failed` are the process's own end, `waiting` a manual task).
EVENTS = ("finished", "failed", "waiting")
PROCESS_EVENTS = ("step", "finished", "failed", "waiting")
TARGET_FIELDS = {"connection", "on"}


def check_notify(value: Any, *, events: tuple[str, ...] = EVENTS) -> dict[str, list[str]]:
    """Every problem of a `notify` list, each under its path (`notify.0.connection`); empty when it is fine.

    Each target names an `http` connection of the operator that has a `secret` to sign deliveries with, and the
    events it wants (`on`, default: all of them)."""
    if not isinstance(value, list):
        return {"notify": ['give a list of targets: [{"connection": "ops-hook", "on": ["finished", "failed"]}]']}
    if len(value) > defaults.NOTIFY_MAX_TARGETS:
        return {"notify": [f"at most {defaults.NOTIFY_MAX_TARGETS} targets (got {len(value)})"]}
    errors: dict[str, list[str]] = {}
    for index, target in enumerate(value):
        path = f"notify.{index}"
        if not isinstance(target, dict):
            errors[path] = ['give a target as {"connection": "<http connection>", "on": [...]}']
            continue
        for key in sorted(set(target) - TARGET_FIELDS):
            errors[f"{path}.{key}"] = [f"Unknown field; a target has only {sorted(TARGET_FIELDS)}."]
        name = target.get("connection")
        try:
            connection = reach.current().connection(name, kinds=("http",), setting=f"{path}.connection")
        except SettingError as exc:
            errors[exc.field] = [exc.message]
        else:
            if not connection.signing_key:
                errors[f"{path}.connection"] = [
                    f"connection {name!r} has no secret to sign notifications with; the operator adds "
                    'secret = {sealed = "..."} (or {env = "VARIABLE"}) to its entry in COLLECTOR_CONNECTIONS']
        on = target.get("on", list(events))
        if not isinstance(on, list) or not on or any(e not in events for e in on):
            errors[f"{path}.on"] = [f"give a non-empty list of events out of {list(events)} (got {on!r})"]
    return errors


def targets(value: list[dict[str, Any]] | None, *, events: tuple[str, ...] = EVENTS) -> list[dict[str, Any]]:
    """A checked `notify` list in its stored form: each target's connection and events, defaults filled."""
    return [{"connection": t["connection"], "on": list(t.get("on", events))} for t in value or []]
