"""The secrets of a job spec: where they sit, taken out to be sealed and put back, and which platforms take any."""

from __future__ import annotations

import copy
from typing import Any

from collector.config import Config
from collector.errors import ConfigError
from collector.masking import MASK
from collector.specs.job import JobSpec
from collector.specs.registry import Registry
from collector.specs.schema import storage_backends


def secret_paths(spec: JobSpec) -> list[tuple[str, ...]]:
    """Where secrets sit in a spec's settings: secret settings and the secret settings of storage specs."""
    paths: list[tuple[str, ...]] = []
    backends = storage_backends()
    for setting in spec.platform.settings.settings:
        value = spec.settings.get(setting.name)
        if value is None:
            continue
        if setting.secret:
            paths.append((setting.name,))
        elif setting.type == "storage" and isinstance(value, dict) and value.get("type") in backends:
            for sub in backends[value["type"]].settings.secret_names():
                if value.get("settings", {}).get(sub) is not None:
                    paths.append((setting.name, "settings", sub))
    return paths


def split_secrets(spec: JobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings with secrets masked, and the secrets by dotted path (to be sealed)."""
    masked = copy.deepcopy(spec.settings)
    secrets: dict[str, Any] = {}
    for path in secret_paths(spec):
        parent = masked
        for part in path[:-1]:
            parent = parent[part]
        secrets[".".join(path)] = parent[path[-1]]
        parent[path[-1]] = MASK
    return masked, secrets


def merge_secrets(masked: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `split_secrets`: the settings with their secret values back in place."""
    settings = copy.deepcopy(masked)
    for dotted, value in secrets.items():
        parent = settings
        *parents, last = dotted.split(".")
        for part in parents:
            parent = parent[part]
        parent[last] = value
    return settings


def secrets_in_body(body: Any, registry: Registry) -> list[str]:
    """The values a raw job spec gives for secret settings (its platform's and its storage targets')."""
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


def platforms_with_secrets(registry: Registry) -> list[str]:
    """Ids of the platforms that take a secret: a `Secret` setting, or a storage target whose backend has one."""
    backend_secrets = any(spec.settings.secret_names() for spec in storage_backends().values())
    return [
        platform.id
        for platform in registry.platforms.values()
        if any(s.secret or (s.type == "storage" and backend_secrets) for s in platform.settings.settings)
    ]


def require_secret_key(config: Config, registry: Registry, *, process: str) -> None:
    """Refuse to start `process` without `COLLECTOR_SECRET_KEY` when some platform could be given secrets."""
    if config.secret_key:
        return
    needing = platforms_with_secrets(registry)
    if needing:
        raise ConfigError(
            f"COLLECTOR_SECRET_KEY is not set, and platform(s) {', '.join(needing)} take secret settings that "
            f"the {process} must seal or unseal; set COLLECTOR_SECRET_KEY to a long random string (the same for "
            "every API and worker process), e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
