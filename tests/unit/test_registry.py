"""Platform discovery: good files load, broken ones are reported by name and do not stop the rest."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from collector.specs.registry import Registry

GOOD = '''
"""A good platform."""
from collector.platform import Platform

class Good(Platform):
    """Collects nothing, well."""
    LIMIT = 3
    def __init__(self, rows: int = 1) -> None:
        self.rows = rows
    def _run(self, ctx):
        return {"rows": self.rows}
'''

BROKEN = {
    "syntax": "def oops(:\n",
    "raises": "raise RuntimeError('cannot import me')\n",
    "two": GOOD + "\nclass Other(Good):\n    '''Another.'''\n    def _run(self, ctx):\n        return {}\n",
    "nodoc": "class NoDoc:\n    def _run(self, ctx):\n        return {}\n",
    "untyped": (
        "class Untyped:\n    '''Doc.'''\n    def __init__(self, x):\n        pass\n"
        "    def _run(self, ctx):\n        return {}\n"
    ),
    "norun": "class NoRun:\n    '''Doc.'''\n",
}


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    root = tmp_path / "testplatforms"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "good.py").write_text(textwrap.dedent(GOOD))
    (root / "_private.py").write_text("raise RuntimeError('never imported')\n")
    for name, source in BROKEN.items():
        (root / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "testplatforms"
    for name in [m for m in sys.modules if m.startswith("testplatforms")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_broken_files_are_reported_by_name_and_good_ones_still_load(package: str) -> None:
    registry = Registry.discover(package)
    assert list(registry.platforms) == ["good"]
    assert set(registry.broken) == {"syntax", "raises", "two", "nodoc", "untyped", "norun"}
    assert "cannot import me" in registry.broken["raises"]
    assert "exactly one class" in registry.broken["two"]
    assert "docstring" in registry.broken["nodoc"]
    assert "'x' has no type annotation" in registry.broken["untyped"]
    assert "exactly one class" in registry.broken["norun"]


def test_a_platform_is_described_by_its_docstring_and_settings(package: str) -> None:
    spec = Registry.discover(package).get("good")
    assert spec is not None
    assert spec.describe() == {
        "id": "good",
        "description": "Collects nothing, well.",
        "settings": [{"name": "rows", "type": "integer", "required": False, "default": 1, "secret": False}],
        "rate_limit": None,
    }
