"""Dropping one file into the platforms package is the whole integration: listed, validated, run."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.app import create_app
from collector.config import Config
from tests.conftest import ROOT, PoolProcess, ServedApp, wait_for

NEW_PLATFORM = '''
"""Greets people: a platform added by dropping this file in."""
from typing import Literal

from collector.platform import Platform


class Greeter(Platform):
    """Says hello to each name, in the chosen style."""

    PUNCTUATION = "!"

    def __init__(self, names: list[str], style: Literal["plain", "loud"] = "plain") -> None:
        self.names, self.style = names, style

    def _run(self, ctx):
        rows = []
        for n, name in enumerate(self.names, 1):
            text = f"hello {name}{self.PUNCTUATION}"
            rows.append({"greeting": text.upper() if self.style == "loud" else text})
            ctx.progress(n, len(self.names))
        ctx.dataset("processed", rows)
        return {"greeted": len(rows)}
'''


@pytest.fixture
def package_with_new_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    copy = tmp_path / "myplatforms"
    shutil.copytree(ROOT / "platforms", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "greeter.py").write_text(textwrap.dedent(NEW_PLATFORM))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myplatforms"


def test_a_dropped_in_platform_is_listed_and_runs(
    package_with_new_file: str, config: Config, start_pool: Callable[..., PoolProcess], tmp_path: Path
) -> None:
    import dataclasses

    cfg = dataclasses.replace(config, platforms_package=package_with_new_file)
    served = ServedApp(create_app(cfg))
    try:
        _, body = served.request("GET", "/platforms/get")
        greeter = next(p for p in body["platforms"] if p["id"] == "greeter")
        assert greeter["description"] == "Says hello to each name, in the chosen style."
        assert greeter["settings"] == [
            {"name": "names", "type": "list", "required": True, "items": "string", "secret": False},
            {"name": "style", "type": "string", "required": False, "default": "plain",
             "choices": ["plain", "loud"], "secret": False},
        ]
        status, body = served.request("POST", "/execution/run",
                                      {"platform_id": "greeter", "settings": {"style": "shouty"}})
        assert status == 422 and set(body["details"]) == {"settings.names", "settings.style"}
        start_pool(1, cfg, PYTHONPATH=str(tmp_path))
        _, job = served.request("POST", "/execution/run",
                                {"platform_id": "greeter", "settings": {"names": ["ada", "bob"], "style": "loud"}})
        record = wait_for(
            lambda: (r := served.request("GET", f"/execution/get?job_id={job['job_id']}&full")[1])["status"]
            in ("finished", "failed") and r, what="the greeter job to end")
        assert record["status"] == "finished", record
        assert record["result"] == {"greeted": 2}
        assert record["datasets"]["processed"] == [{"greeting": "HELLO ADA!"}, {"greeting": "HELLO BOB!"}]
    finally:
        served.close()
