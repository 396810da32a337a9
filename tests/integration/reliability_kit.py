"""Helpers for the reliability tests: a platforms package with misbehaving platforms, and API shortcuts."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from collector.config import Config
from tests.conftest import ROOT, ServedApp, wait_for

PACKAGE = "reliableplatforms"

STEPS = '''
"""Three steps with a checkpoint after each; kills its own worker in step 2 on the first `crashes` attempts."""
import os
import signal
from pathlib import Path

from collector.platform import Platform


class Steps(Platform):
    """Writes a marker line per step run; crashes (SIGKILL of its own process) in step 2 while attempt <= crashes."""

    def __init__(self, marker_dir: str, crashes: int = 2) -> None:
        self.marker_dir, self.crashes = Path(marker_dir), crashes

    def _run(self, ctx):
        state = ctx.state or {"done": 0}
        for step in (1, 2, 3):
            if state["done"] >= step:
                continue
            with open(self.marker_dir / f"step{step}", "a") as marker:
                marker.write(f"{ctx.attempt}\\n")
            if step == 2 and ctx.attempt <= self.crashes:
                os.kill(os.getpid(), signal.SIGKILL)
            state = {"done": step}
            ctx.checkpoint(state)
        return {"steps": 3, "attempt": ctx.attempt}
'''

FLAKY = '''
"""Fails with a transient error on the first `failures` attempts (or with a fatal one), then succeeds."""
from collector.platform import FatalError, Platform, TransientError


class Flaky(Platform):
    """Raises TransientError (HTTP 503 style) while attempt <= failures; FatalError at once when `fatal`."""

    def __init__(self, failures: int = 1, fatal: bool = False) -> None:
        self.failures, self.fatal = failures, fatal

    def _run(self, ctx):
        if self.fatal:
            raise FatalError("the source says 401: bad credentials")
        if ctx.attempt <= self.failures:
            raise TransientError(f"the source answered 503 on attempt {ctx.attempt}")
        return {"attempt": ctx.attempt}
'''

SLEEPER = '''
"""Works for `seconds`, reporting progress; `stubborn` ignores cancels and timeouts and never reports."""
import time

from collector.platform import Platform


class Sleeper(Platform):
    """Sleeps in small steps; stubborn swallows every exception and keeps sleeping; polite checks ctx.cancelled."""

    def __init__(self, seconds: float = 5.0, stubborn: bool = False, polite: bool = False) -> None:
        self.seconds, self.stubborn, self.polite = seconds, stubborn, polite

    def _run(self, ctx):
        end = time.monotonic() + self.seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            if self.stubborn:
                try:
                    time.sleep(0.05)
                except Exception:
                    pass
                continue
            time.sleep(0.02)
            if self.polite and ctx.cancelled:
                return {"interrupted_at": n}
            ctx.progress(n, None, "sleeping")
        return {"slept": self.seconds}
'''

SLOWPOKE = '''
"""A platform whose class constant TIMEOUT_S is shorter than its work."""
import time

from collector.platform import Platform


class Slowpoke(Platform):
    """Sleeps `seconds`; TIMEOUT_S is 1."""

    TIMEOUT_S = 1

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds

    def _run(self, ctx):
        time.sleep(self.seconds)
        return {"slept": self.seconds}
'''


def make_package(tmp_path: Path) -> Path:
    """A copy of platforms/ plus the test platforms, importable once `tmp_path` is on sys.path / PYTHONPATH."""
    target = tmp_path / PACKAGE
    shutil.copytree(ROOT / "platforms", target, ignore=shutil.ignore_patterns("__pycache__"))
    for name, source in (("steps", STEPS), ("flaky", FLAKY), ("sleeper", SLEEPER), ("slowpoke", SLOWPOKE)):
        (target / f"{name}.py").write_text(textwrap.dedent(source))
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[module]  # an earlier test's copy, from another tmp_path, is not this one
    return target


def with_package(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, platforms_package=PACKAGE, **changes)


def close(served: ServedApp) -> None:
    """Stop serving and close the app's Redis connections (and its reaper, if it runs one)."""
    app = served.server.app
    reaper = app.extensions.get("collector_reaper")
    if reaper is not None:
        reaper.stop()
    served.close()
    app.extensions["collector"].connection.connection_pool.disconnect()


def submit(served: ServedApp, platform_id: str, settings: dict, **extra: Any) -> str:
    status, body = served.request("POST", "/execution/run", {"platform_id": platform_id, "settings": settings,
                                                             **extra})
    assert status == 202, body
    return body["job_id"]


def view(served: ServedApp, job_id: str) -> dict:
    status, body = served.request("GET", f"/execution/get?job_id={job_id}")
    assert status == 200, body
    return body


def events(served: ServedApp, job_id: str) -> list[dict]:
    status, body = served.request("GET", f"/execution/events?job_id={job_id}")
    assert status == 200, body
    return body


def wait_status(served: ServedApp, job_id: str, *statuses: str, timeout_s: float = 20.0) -> dict:
    return wait_for(lambda: (r := view(served, job_id))["status"] in statuses and r, timeout_s=timeout_s,
                    what=f"job {job_id} to be {' or '.join(statuses)}")
