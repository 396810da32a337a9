"""Concurrency caps as specs name them: a job's cap key, the cap an operator or the platform sets on it, and the
check of a spec's `concurrency_key`."""

from __future__ import annotations

from typing import Any

from collector.config import Config
from collector.specs.registry import PlatformSpec, Registry
from collector.types import CONCURRENCY_KEY

KEY_RULE = "give an account or tenant name of 1-64 letters, digits or `_.@-` (e.g. \"acme-eu\")"


def check_concurrency_key(value: Any) -> dict[str, list[str]]:
    """Field errors of a spec's `concurrency_key`: a short string an operator can name in COLLECTOR_CONCURRENCY."""
    if isinstance(value, str) and CONCURRENCY_KEY.match(value):
        return {}
    shown = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
    return {"concurrency_key": [f"{shown[:80]} is no concurrency key; {KEY_RULE}"]}


def cap_key(platform: PlatformSpec, concurrency_key: str | None, config: Config) -> str | None:
    """The key the job's slots are counted under (`platform` or `platform:key`), or None when nothing can cap it:
    no key given, no CONCURRENCY on the platform and no operator cap naming it."""
    if concurrency_key is not None:
        return f"{platform.id}:{concurrency_key}"
    capped = platform.concurrency is not None or any(
        name == platform.id or name.startswith(platform.id + ":") for name in config.caps)
    return platform.id if capped else None


def cap_limit(cap: str, registry: Registry, config: Config) -> int | None:
    """How many jobs of `cap` may run at once: the operator's cap on the key, else on the platform, else the
    platform's CONCURRENCY; None: no cap (the platform is gone or never had one)."""
    platform_id = cap.partition(":")[0]
    if cap in config.caps:
        return config.caps[cap]
    if platform_id in config.caps:
        return config.caps[platform_id]
    spec = registry.get(platform_id)
    return spec.concurrency if spec is not None else None


def platform_caps(platform: PlatformSpec, config: Config) -> dict[str, Any]:
    """What GET /platforms/get shows of a platform's caps: the cap per key, and the operator's caps on single keys."""
    prefix = platform.id + ":"
    return {
        "concurrency": config.caps.get(platform.id, platform.concurrency),
        "concurrency_keys": {name.removeprefix(prefix): n for name, n in sorted(config.caps.items())
                             if name.startswith(prefix)},
    }
