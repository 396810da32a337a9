"""The jobs the comparison systems run: a no-op, and one that sleeps 10 ms (the demo platform's equivalents)."""

from __future__ import annotations

import time


def noop() -> None:
    """What a `demo` job with rows=1 does, minus collector: nothing."""


def sleep10() -> None:
    """What a `demo` job with rows=1, delay_s=0.01 waits for."""
    time.sleep(0.01)
