"""A step process's definition: checked all at once, its version, and the references between its tasks.

A task's settings may hold `{"$result": "task.path"}` anywhere: the value at `path` in the result of `task`, a
platform task of an earlier step. References are checked when the process is defined (an unknown task, a manual
one, or one of the same or a later step is a 422 naming the setting's path) and resolved when the task starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from collector.errors import ValidationError
from collector.specs.job import validate_spec
from collector.specs.notify import PROCESS_EVENTS, check_notify
from collector.store.state import state_key_problem
from collector.submit.submitter import Submitter

PROCESS_FIELDS = {"name", "version", "steps", "notify"}
STEP_FIELDS = {"name", "tasks"}
TASK_FIELDS = {"name", "platform_id", "settings", "manual", "prompt", "state_key"}
NOTE_MAX_CHARS = 500  # longest note an ack, rerun or finalize keeps in the process's history
REFERENCE = "$result"
VERDICTS = {"OK", "FAIL"}


def _err(errors: dict[str, list[str]], path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def validate_definition(body: Any, submitter: Submitter) -> dict[str, Any]:
    """Check a process definition; all errors at once under paths like `steps.0.tasks.1.settings.rows`."""
    if not isinstance(body, dict):
        raise ValidationError("a process must be a JSON object", details={"_schema": ["send an object"]})
    errors: dict[str, list[str]] = {}
    for key in sorted(set(body) - PROCESS_FIELDS):
        _err(errors, key, "Unknown field.")
    if not isinstance(body.get("name"), str) or not 0 < len(body["name"]) <= 200:
        _err(errors, "name", "give the process a name of 1 to 200 characters")
    if "version" in body and not isinstance(body["version"], str | int):
        _err(errors, "version", "give the definition's version as a string")
    if body.get("notify") is not None:  # webhooks told of step changes, sign-offs awaited and the end
        errors.update(check_notify(body["notify"], events=PROCESS_EVENTS))
    steps = body.get("steps")
    if not isinstance(steps, list) or not steps:
        _err(errors, "steps", "give a non-empty list of steps, each {name, tasks: [...]}")
        steps = []
    placed = _task_places(steps)
    step_names: set[str] = set()
    task_names: set[str] = set()
    for i, step in enumerate(steps):
        where = f"steps.{i}"
        if not _named_object(step, where, STEP_FIELDS, step_names, errors, shape="a step is an object {name, tasks}",
                             naming="give each step a unique, non-empty name"):
            continue
        tasks = step.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            _err(errors, f"{where}.tasks", "give a non-empty list of tasks")
            continue
        for j, task in enumerate(tasks):
            _check_task(task, f"{where}.tasks.{j}", task_names, errors, submitter, step=i, placed=placed)
    if errors:
        raise ValidationError(
            f"the process has {len(errors)} error(s); fix the fields named in details and send it again",
            details=errors,
        )
    return body


def _task_places(steps: list[Any]) -> dict[str, tuple[int, bool]]:
    """Each task name → (its step's index, whether it is manual): what references are checked against."""
    placed: dict[str, tuple[int, bool]] = {}
    for i, step in enumerate(steps):
        tasks = step.get("tasks") if isinstance(step, dict) else None
        for task in tasks if isinstance(tasks, list) else []:
            if isinstance(task, dict) and isinstance(task.get("name"), str):
                placed.setdefault(task["name"], (i, task.get("manual") is True))
    return placed


def _named_object(item: Any, where: str, allowed: set[str], names: set[str], errors: dict[str, list[str]], *,
                  shape: str, naming: str) -> bool:
    """Check a step or a task: an object with known fields and a name not used before. False when not an object."""
    if not isinstance(item, dict):
        _err(errors, where, shape)
        return False
    for key in sorted(set(item) - allowed):
        _err(errors, f"{where}.{key}", "Unknown field.")
    name = item.get("name")
    if not isinstance(name, str) or not name or name in names:
        _err(errors, f"{where}.name", naming)
    names.add(str(name))
    return True


def _check_task(task: Any, where: str, names: set[str], errors: dict[str, list[str]], submitter: Submitter, *,
                step: int, placed: dict[str, tuple[int, bool]]) -> None:
    if not _named_object(task, where, TASK_FIELDS, names, errors,
                         shape="a task is an object: {name, platform_id, settings} or {name, manual: true, prompt}",
                         naming="give each task a name unique in the process (acks name it)"):
        return
    if task.get("manual") is True:
        if not isinstance(task.get("prompt", ""), str):
            _err(errors, f"{where}.prompt", "say what the person should check, as a string")
        if "platform_id" in task or "settings" in task or "state_key" in task:
            _err(errors, where, "a manual task has no platform_id, settings or state_key")
        return
    if "manual" in task:
        _err(errors, f"{where}.manual", "only `manual: true` is meaningful; leave it out for platform tasks")
    settings = task.get("settings", {})
    referring: set[str] = set()
    if isinstance(settings, dict):
        for path, target in references(settings):
            referring.add(path[0])
            message = _reference_problem(target, step=step, placed=placed)
            if message:
                _err(errors, ".".join((where, "settings", *path)), message)
        settings = {k: v for k, v in settings.items() if k not in referring}
        platform = submitter.registry.get(task.get("platform_id")) if isinstance(task.get("platform_id"), str) else None
        known = {s.name: s for s in platform.settings.settings} if platform else {}
        for key in sorted(referring):
            setting = known.get(key)
            if platform and setting is None:
                _err(errors, f"{where}.settings.{key}", "Unknown field.")
            elif setting is not None and (setting.secret or setting.type == "storage"):
                # Its value would be kept in the process's definition in plain text, beside the reference.
                _err(errors, f"{where}.settings.{key}", "a secret or storage setting cannot take another task's "
                                                        "result; give its value, or a connection name")
    if task.get("state_key") is not None and (problem := state_key_problem(task["state_key"])):
        _err(errors, f"{where}.state_key", problem)
    try:
        validate_spec({"platform_id": task.get("platform_id"), "settings": settings}, submitter.registry)
    except ValidationError as exc:
        for path, messages in exc.details.items():
            # A setting given by a reference is checked when the task starts, with the value it refers to.
            if path.split(".")[:2] in (["settings", key] for key in referring):
                continue
            errors.setdefault(f"{where}.{path}", []).extend(messages)


def references(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every `{"$result": target}` in `value`, with its path (keys and list indexes as text)."""
    if isinstance(value, dict):
        if REFERENCE in value:
            return [(path, value[REFERENCE] if len(value) == 1 else None)]
        return [found for key, item in value.items() for found in references(item, (*path, str(key)))]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in references(item, (*path, str(i)))]
    return []


def _reference_problem(target: Any, *, step: int, placed: dict[str, tuple[int, bool]]) -> str | None:
    if not isinstance(target, str) or not target:
        return 'a reference is {"$result": "task.path"} alone: an earlier task\'s name, then the path in its result'
    name = target.split(".", 1)[0]
    if name not in placed:
        return f"{target!r} names no task of this process; refer to a task of an earlier step by its name"
    where, manual = placed[name]
    if manual:
        return f"task {name!r} is a manual task and has no result; refer to a platform task"
    if where >= step:
        return (f"task {name!r} runs in {'the same' if where == step else 'a later'} step, so its result is not "
                "there when this task starts; refer to a task of an earlier step")
    return None


def resolve(settings: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """`settings` with each reference replaced by the value it names in `results` (task name → result).
    A reference to a task with no result, or a path its result lacks, raises `ValidationError` with the path."""
    resolved = copy.deepcopy(settings)
    for path, target in references(settings):
        name, _, inner = str(target).partition(".")
        if results.get(name) is None:
            raise ValidationError(f"settings.{'.'.join(path)} refers to {target!r}, but task {name!r} has no result "
                                  "(it failed or was skipped)", details={f"settings.{'.'.join(path)}": ["no result"]})
        value = results[name]
        for part in inner.split(".") if inner else []:
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise ValidationError(
                    f"settings.{'.'.join(path)} refers to {target!r}, but the result of task {name!r} has no "
                    f"{part!r} there (it has {_keys(value)})", details={f"settings.{'.'.join(path)}": ["not found"]})
        _put(resolved, path, value)
    return resolved


def _keys(value: Any) -> str:
    if isinstance(value, dict):
        return f"keys {sorted(value)[:20]}"
    if isinstance(value, list):
        return f"{len(value)} items"
    return f"the value {json.dumps(value)[:80]}"


def _put(settings: Any, path: tuple[str, ...], value: Any) -> None:
    parent = settings
    for part in path[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if isinstance(parent, list):
        parent[int(path[-1])] = value
    elif path:
        parent[path[-1]] = value


def parse_verdict(body: Any, *, extra: frozenset[str] = frozenset()) -> tuple[str, str | None, str | None]:
    """The `result`, `reason` and note of an ack or finalize body; `ValidationError` when malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("result"), str) or body["result"] not in VERDICTS:
        raise ValidationError(
            'send {"result": "OK" or "FAIL", "reason": why, "note": anything else to keep}',
            details={"result": ['must be "OK" or "FAIL"']},
        )
    unknown = sorted(set(body) - {"result", "reason", "note"} - extra)
    if unknown:
        raise ValidationError("unknown fields in the request", details={k: ["Unknown field."] for k in unknown})
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValidationError("the reason is text", details={"reason": ["Not a valid string."]})
    return body["result"], reason, note_of(body)


def note_of(body: dict[str, Any]) -> str | None:
    """The caller's note in an ack, rerun or finalize body: `note`, or `by`, which older clients sent as who
    acted."""
    notes = [body[k] for k in ("note", "by") if body.get(k) is not None]
    if any(not isinstance(n, str) or len(n) > NOTE_MAX_CHARS for n in notes):
        raise ValidationError(f"a note is text of at most {NOTE_MAX_CHARS} characters",
                              details={"note": [f"a string of at most {NOTE_MAX_CHARS} characters"]})
    if len(notes) == 2 and notes[0] != notes[1]:
        raise ValidationError('"by" is an older name of "note"; give one of them',
                              details={"by": ["give note or by, not both"]})
    return notes[0] if notes else None


def definition_version(body: dict[str, Any]) -> str:
    if "version" in body:
        return str(body["version"])
    canonical = json.dumps(body["steps"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
