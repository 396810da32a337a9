"""Storage backends collected rows are written to, chosen by a storage spec's `type`."""

from __future__ import annotations

import importlib
from typing import Any

from storage.base import Row, Storage

# Modules that define backends; each backend class names its spec `type` in `TYPE`.
BACKEND_MODULES = ("storage.sql", "storage.files")


def backends() -> dict[str, type[Storage]]:
    """Every available backend by its `type`; a module that fails to import is skipped."""
    found: dict[str, type[Storage]] = {}
    for name in BACKEND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Storage) and value.TYPE:
                found[value.TYPE] = value
    return found


def open_storage(spec: dict[str, Any]) -> Storage:
    """A backend instance from a validated spec `{"type": ..., "settings": {...}}` (no connection yet)."""
    return backends()[spec["type"]](**spec.get("settings", {}))


__all__ = ["Row", "Storage", "backends", "open_storage"]
