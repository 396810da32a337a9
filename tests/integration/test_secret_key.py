"""`collector serve` and `collector worker` refuse to start without COLLECTOR_SECRET_KEY when secrets exist."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from collector.config import Config
from tests.conftest import ROOT, worker_env
from tests.secret_platforms import LEAKY, make_package


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker", "-n", "1", "--burst"]])
def test_no_key_no_start_when_a_platform_has_secrets(
    command: list[str], config: Config, tmp_path: Path
) -> None:
    package = make_package(tmp_path, "keyplatforms", leaky=LEAKY)
    env = worker_env(dataclasses.replace(config, platforms_package=package), PYTHONPATH=str(tmp_path))
    env.pop("COLLECTOR_SECRET_KEY")
    done = subprocess.run([sys.executable, "-m", "collector", *command], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "COLLECTOR_SECRET_KEY is not set" in done.stderr and "leaky" in done.stderr


def test_the_worker_starts_without_a_key_when_no_platform_has_secrets(config: Config, tmp_path: Path) -> None:
    package = make_package(tmp_path, "plainplatforms", demo=(ROOT / "platforms" / "demo.py").read_text())
    env = worker_env(dataclasses.replace(config, platforms_package=package), PYTHONPATH=str(tmp_path))
    env.pop("COLLECTOR_SECRET_KEY")
    done = subprocess.run([sys.executable, "-m", "collector", "worker", "-n", "1", "--burst"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker", "-n", "1", "--burst"], ["up", "--port", "0"],
                                     ["seal"]])
def test_a_short_key_stops_every_process_at_start(command: list[str], config: Config) -> None:
    env = worker_env(config)
    env["COLLECTOR_SECRET_KEY"] = "short-key"
    done = subprocess.run([sys.executable, "-m", "collector", *command], env=env, cwd=ROOT, input="a secret",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "COLLECTOR_SECRET_KEY is 9 bytes long; it must be at least 32" in done.stderr
    assert "short-key" not in done.stderr and done.stdout == ""
