"""The secrets of a job spec: where they sit, taken out to be sealed and put back, and which platforms take any."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from collector.config import Config
from collector.errors import ConfigError
from collector.masking import given_secrets
from collector.sealing import check_key
from collector.specs.job import JobSpec
from collector.specs.registry import Registry
from collector.specs.schema import masked_secret, storage_backends


def secret_settings(spec: JobSpec) -> list[tuple[tuple[str, ...], bool]]:
    """Where the secret settings given in a spec sit (`("token",)`, `("storage", "settings", "password")`), each
    with whether it is a mapping of secrets (`dict[str, Secret]`, sealed whole, shown with each value masked)."""
    found: list[tuple[tuple[str, ...], bool]] = []
    backends = storage_backends()
    for setting in spec.platform.settings.settings:
        value = spec.settings.get(setting.name)
        if value is None:
            continue
        if setting.secret:
            found.append(((setting.name,), setting.secret_mapping))
        elif setting.type == "storage" and isinstance(value, dict) and value.get("type") in backends:
            for sub in backends[value["type"]].settings.settings:
                if sub.secret and value.get("settings", {}).get(sub.name) is not None:
                    found.append(((setting.name, "settings", sub.name), sub.secret_mapping))
    return found


def secret_paths(spec: JobSpec) -> list[tuple[str, ...]]:
    """Where secret values sit in a spec's settings: secret settings, each key of a mapping of secrets
    (`("headers", "Authorization")`), and the secret settings of storage specs."""
    paths: list[tuple[str, ...]] = []
    for path, mapping in secret_settings(spec):
        if mapping:
            paths += [(*path, key) for key in _at(spec.settings, path) or {}]
        else:
            paths.append(path)
    return paths


def _at(settings: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = settings
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def split_secrets(spec: JobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings with secrets masked, and the secrets by dotted path of their setting (to be sealed)."""
    masked = copy.deepcopy(spec.settings)
    secrets: dict[str, Any] = {}
    for path, mapping in secret_settings(spec):
        parent = masked
        for part in path[:-1]:
            parent = parent[part]
        secrets[".".join(path)] = parent[path[-1]]
        parent[path[-1]] = masked_secret(parent[path[-1]], mapping=mapping)
    return masked, secrets


def secret_values(secrets: Mapping[str, Any]) -> list[str]:
    """The texts of the secrets `split_secrets` gave (a mapping's values one by one), to mask wherever they show."""
    return [text for value in secrets.values() for text in given_secrets(value)]


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
        if setting.secret:
            found += given_secrets(value)
        elif setting.type == "storage" and isinstance(value, dict) and isinstance(value.get("type"), str) \
                and value["type"] in backends:
            inner = value.get("settings")
            if isinstance(inner, dict):
                for name in backends[value["type"]].settings.secret_names():
                    found += given_secrets(inner.get(name))
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
    """Refuse to start `process` with a `COLLECTOR_SECRET_KEY` that is too short, or without one when some platform
    could be given secrets."""
    if config.secret_key:
        check_key(config.secret_key)
        return
    needing = platforms_with_secrets(registry)
    if needing:
        raise ConfigError(
            f"COLLECTOR_SECRET_KEY is not set, and platform(s) {', '.join(needing)} take secret settings that "
            f"the {process} must seal or unseal; set COLLECTOR_SECRET_KEY to a long random string (the same for "
            "every API and worker process), e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
