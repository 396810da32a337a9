"""Discovery of platforms (one class per file in `platforms/`), each checked against the contract, with its schema."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import pkgutil
from typing import Any

from collector.errors import ContractError
from collector.platform import Platform
from collector.rates import Rate, parse_rate
from collector.specs.schema import SettingsSchema, build_settings_schema

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PlatformSpec:
    """A discovered platform: its id (the file name), class, description and settings."""

    id: str
    cls: type
    description: str
    settings: SettingsSchema
    rate_limit: Rate | None = None  # its RATE_LIMIT: every job of it shares one bucket, over every pool

    @property
    def timeout_s(self) -> int | None:
        return getattr(self.cls, "TIMEOUT_S", None)

    @property
    def concurrency(self) -> int | None:
        """How many of its jobs may run at once per concurrency key, over every pool (None: no cap)."""
        return getattr(self.cls, "CONCURRENCY", None)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "settings": [s.describe() for s in self.settings.settings],
            "rate_limit": None if self.rate_limit is None else str(self.rate_limit),
        }


@dataclasses.dataclass(frozen=True)
class Registry:
    """Every platform found in a package, and the files that failed to load with the reason."""

    package: str
    platforms: dict[str, PlatformSpec]
    broken: dict[str, str]

    @classmethod
    def discover(cls, package: str = "platforms") -> Registry:
        """Import every module of `package`; a module that fails is reported by name, never raised."""
        pkg = importlib.import_module(package)
        platforms: dict[str, PlatformSpec] = {}
        broken: dict[str, str] = {}
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            try:
                platforms[info.name] = load_platform(f"{package}.{info.name}", info.name)
            except Exception as exc:  # a broken file must never take the service down
                broken[info.name] = f"{type(exc).__name__}: {exc}"
                log.error("platform %r is not available: %s", info.name, broken[info.name])
        return cls(package, platforms, broken)

    def get(self, platform_id: str) -> PlatformSpec | None:
        return self.platforms.get(platform_id)

    def file_of(self, platform_id: str) -> str:
        """The file of a platform, as people name it: `platforms/demo.py`."""
        return f"{self.package.replace('.', '/')}/{platform_id}.py"


def load_platform(module_name: str, platform_id: str) -> PlatformSpec:
    """Import one platform module and check it against the contract; `ContractError` says what is wrong."""
    module = importlib.import_module(module_name)
    where = f"platforms/{platform_id}.py"
    candidates = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__module__ == module.__name__ and callable(getattr(obj, "_run", None))
    ]
    if len(candidates) != 1:
        names = ", ".join(c.__name__ for c in candidates) or "none"
        raise ContractError(f"{where} must define exactly one class with a _run method (found: {names})")
    platform_cls = candidates[0]
    if getattr(platform_cls, "_run", None) is Platform._run:
        raise ContractError(f"{where}: class {platform_cls.__name__} does not define _run(self, ctx)")
    description = inspect.getdoc(platform_cls) or ""
    if not description or description == inspect.getdoc(Platform):
        raise ContractError(f"{where}: class {platform_cls.__name__} has no docstring; say what it collects")
    concurrency = getattr(platform_cls, "CONCURRENCY", None)
    if concurrency is not None and (not isinstance(concurrency, int) or isinstance(concurrency, bool)
                                    or concurrency < 1):
        raise ContractError(f"{where}: {platform_cls.__name__}.CONCURRENCY = {concurrency!r}; set it to a whole "
                            "number of 1 or more (jobs at once per concurrency key), or None for no cap")
    settings = build_settings_schema(platform_cls, where=where)
    rate_limit = read_rate_limit(platform_cls, where)
    return PlatformSpec(platform_id, platform_cls, description, settings, rate_limit=rate_limit)


def read_rate_limit(platform_cls: type, where: str) -> Rate | None:
    """The class's `RATE_LIMIT` ("10/s", "600/min", "5000/h"), or None; `ContractError` says how to write it."""
    value = getattr(platform_cls, "RATE_LIMIT", None)
    if value is None:
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise ContractError(f"{where}: {platform_cls.__name__}.RATE_LIMIT = {exc}") from None


