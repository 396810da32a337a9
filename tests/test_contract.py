"""The platform contract, checked for every file in `platforms/`."""

from __future__ import annotations

import json
import pkgutil

import pytest

import platforms
from collector.specs.registry import Registry, load_platform

PLATFORM_IDS = sorted(m.name for m in pkgutil.iter_modules(platforms.__path__) if not m.name.startswith("_"))


def test_no_platform_file_is_broken() -> None:
    assert Registry.discover("platforms").broken == {}


@pytest.mark.parametrize("platform_id", PLATFORM_IDS)
def test_platform_follows_the_contract(platform_id: str) -> None:
    spec = load_platform(f"platforms.{platform_id}", platform_id)
    assert spec.description.strip(), "a platform says what it collects in its docstring"
    assert callable(spec.cls._run)
    described = spec.describe()
    assert json.loads(json.dumps(described)) == described
    for setting in described["settings"]:
        assert {"name", "type", "required", "secret"} <= set(setting)
    defaults = {s.name: s.default for s in spec.settings.settings if not s.required}
    assert spec.settings.schema().load(defaults, partial=True).keys() >= defaults.keys(), "defaults validate"
