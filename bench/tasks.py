"""The jobs the comparison systems run: a no-op, one that sleeps 10 ms (the demo platform's equivalents), one GET."""

from __future__ import annotations

import time
import urllib.request


def noop() -> None:
    """What a `demo` job with rows=1 does, minus collector: nothing."""


def sleep10() -> None:
    """What a `demo` job with rows=1, delay_s=0.01 waits for."""
    time.sleep(0.01)


def http_wait(url: str) -> None:
    """What an `http_json` job of bench/io_bench.py does, minus collector: one GET of a page that takes 100 ms."""
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
