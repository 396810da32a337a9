"""A job spec checked against its platform: every problem at once, each under its field path."""

from __future__ import annotations

import dataclasses
from typing import Any

from marshmallow import ValidationError as MarshmallowError

from collector import defaults
from collector.errors import SettingError, ValidationError
from collector.specs.caps import check_concurrency_key
from collector.specs.notify import check_notify, targets
from collector.specs.policy import check_retry, check_timeout
from collector.specs.registry import PlatformSpec, Registry
from collector.specs.schema import flatten_errors
from collector.store.lanes import DEFAULT_PRIORITY, PRIORITIES
from collector.store.state import state_key_problem

SPEC_FIELDS = {"_id", "platform_id", "settings", "retry", "timeout_s", "notify", "concurrency_key", "state_key",
               "priority", "idempotency_key"}
IDEMPOTENCY_KEY_MAX_CHARS = 200


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A validated job spec: the platform, the settings as given (defaults filled) and the client's id."""

    platform: PlatformSpec
    settings: dict[str, Any]
    client_id: str | None
    retry: dict[str, Any] | None = None
    timeout_s: int | None = None
    notify: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # webhook targets (specs/notify.py)
    concurrency_key: str | None = None  # what the platform's cap counts per (an account): specs/caps.py
    state_key: str | None = None  # runs of the same key hand their saved state on (store/state.py)
    priority: str = DEFAULT_PRIORITY  # the lane a pool takes it from: high, normal, low
    idempotency_key: str | None = None  # a second submit with it within COLLECTOR_IDEMPOTENCY_TTL_S is the first

    def canonical(self) -> dict[str, Any]:
        """What makes two submits the same job spec (the idempotency key aside): the form compared under a key."""
        return {"platform_id": self.platform.id, "settings": self.settings, "_id": self.client_id,
                "retry": self.retry, "timeout_s": self.timeout_s, "notify": self.notify, "priority": self.priority,
                "concurrency_key": self.concurrency_key, "state_key": self.state_key}


def check_priority(value: Any) -> dict[str, list[str]]:
    """The errors of a spec's (or schedule's) `priority`, under its name."""
    if value in PRIORITIES:
        return {}
    return {"priority": [f"{value!r} is not a priority; give one of {list(PRIORITIES)} (default {DEFAULT_PRIORITY!r})"]}


def check_idempotency_key(value: Any) -> dict[str, list[str]]:
    if isinstance(value, str) and 0 < len(value) <= IDEMPOTENCY_KEY_MAX_CHARS:
        return {}
    return {"idempotency_key": [f"give a string of 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters that names this "
                                "submit (the same key and spec sent again answer with the first job)"]}


def broken_platform(registry: Registry, platform_id: str) -> str:
    """Why the platform `platform_id`, whose file is there, cannot take jobs: the file failed to load."""
    return (f"platform {platform_id!r} is not available: its file {registry.file_of(platform_id)} failed to load "
            f"({registry.broken[platform_id]}); the operator must fix the file and restart the service "
            "(GET /platforms/get lists the broken platforms)")


def validate_spec(body: Any, registry: Registry, *, max_timeout_s: int = defaults.MAX_TIMEOUT_S) -> JobSpec:
    """Check a job spec; `ValidationError` lists every problem at once, each under its field path.
    `max_timeout_s` is the longest `timeout_s` the service allows (COLLECTOR_MAX_TIMEOUT_S)."""
    if not isinstance(body, dict):
        raise ValidationError(
            f"the job spec must be a JSON object, not {type(body).__name__}",
            details={"_schema": ['send {"platform_id": ..., "settings": {...}}']},
        )
    errors: dict[str, list[str]] = {}
    for key in sorted(set(body) - SPEC_FIELDS):
        errors[key] = [f"Unknown field; a job spec has only {sorted(SPEC_FIELDS)}."]
    client_id = body.get("_id")
    if client_id is not None and (not isinstance(client_id, str | int) or isinstance(client_id, bool)):
        errors["_id"] = ["give your reference as a string"]
    platform_id = body.get("platform_id")
    platform = registry.get(platform_id) if isinstance(platform_id, str) else None
    if platform_id is None:
        errors["platform_id"] = [f"Missing data for required field; one of {sorted(registry.platforms)}."]
    elif platform is None and isinstance(platform_id, str) and platform_id in registry.broken:
        errors["platform_id"] = [broken_platform(registry, platform_id)]
    elif platform is None:
        errors["platform_id"] = [f"{platform_id!r} is not a platform; use one of {sorted(registry.platforms)}."]
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        errors["settings"] = ["give the settings as a JSON object"]
    elif platform is not None:
        try:
            loaded = platform.settings.schema().load(settings)
        except MarshmallowError as exc:
            errors.update(flatten_errors(exc.messages, "settings"))
        else:
            # Rules that span settings live in `__init__` (which does no I/O): check them before queueing.
            try:
                platform.cls(**loaded)
            except SettingError as exc:  # one setting refused (a path, a connection): named by its path
                errors.update(flatten_errors(exc.details, "settings"))
            except (ValueError, TypeError) as exc:
                errors["settings"] = [f"{exc}"]
    if body.get("retry") is not None:
        errors.update(check_retry(body["retry"]))
    if body.get("timeout_s") is not None:
        errors.update(check_timeout(body["timeout_s"], max_timeout_s))
    if body.get("notify") is not None:
        errors.update(check_notify(body["notify"]))
    if body.get("concurrency_key") is not None:
        errors.update(check_concurrency_key(body["concurrency_key"]))
    if body.get("state_key") is not None and (problem := state_key_problem(body["state_key"])):
        errors["state_key"] = [problem]
    if "priority" in body:  # null too: leave the field out for the default
        errors.update(check_priority(body["priority"]))
    if "idempotency_key" in body:
        errors.update(check_idempotency_key(body["idempotency_key"]))
    if errors or platform is None:
        message = f"the job spec has {len(errors)} error(s); fix the fields named in details and send it again"
        if isinstance(platform_id, str) and platform_id in registry.broken:
            message = broken_platform(registry, platform_id)
        raise ValidationError(message, details=errors)
    return JobSpec(
        platform,
        {**platform.settings.defaults, **settings},
        None if client_id is None else str(client_id),
        retry=body.get("retry"),
        timeout_s=body.get("timeout_s"),
        notify=targets(body.get("notify")),
        concurrency_key=body.get("concurrency_key"),
        state_key=body.get("state_key"),
        priority=body.get("priority") or DEFAULT_PRIORITY,
        idempotency_key=body.get("idempotency_key"),
    )
