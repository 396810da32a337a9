"""Every platform has a job spec in examples/ that a new user can submit as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.config import Config
from collector.resources import reach
from collector.specs.job import validate_spec
from collector.specs.registry import Registry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REGISTRY = Registry.discover("platforms")


@pytest.fixture(autouse=True)
def _as_make_run_serves_them(data_dir: Path) -> None:
    """The examples' connections (`make run` sets COLLECTOR_CONNECTIONS to them) and a data root of their own."""
    reach.ensure(Config(data_dir=str(data_dir), connections=str(EXAMPLES / "connections.toml")))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("platform_id", sorted(REGISTRY.platforms))
def test_every_platform_has_an_example(platform_id: str) -> None:
    specs = [load(p) for p in sorted(EXAMPLES.glob("*.json"))]
    assert any(s.get("platform_id") == platform_id for s in specs), (
        f"add examples/{platform_id}.json: a job spec for {platform_id} that runs as it is"
    )


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    spec = validate_spec(load(path), REGISTRY)
    assert spec.platform.id == path.stem.split(".")[0]
