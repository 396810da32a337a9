"""Log lines of `collector run` on stderr, printed above its progress bar (`display.ProgressBar`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from collector.cli.display import ProgressBar


class BarAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Prints log lines above the progress bar instead of through it."""

    def __init__(self, bar: ProgressBar) -> None:
        super().__init__(bar.stream)
        self.bar = bar
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with self.bar.cleared():
            super().emit(record)


@contextmanager
def console_logging(bar: ProgressBar) -> Iterator[None]:
    """Route every log line through the bar for the length of a local run; the old handlers come back after."""
    root = logging.getLogger()
    previous = root.handlers[:]
    root.handlers = [BarAwareHandler(bar)]
    try:
        yield
    finally:
        root.handlers = previous
