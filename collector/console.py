"""What `collector run` shows on stderr: a live progress bar (percent, rate, ETA, message) and log lines."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

BAR_WIDTH = 24
# Without a terminal (a pipe, a CI log) the bar cannot be redrawn in place; print a line this often at most.
PLAIN_INTERVAL_S = 1.0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class ProgressBar:
    """Draws the progress states a job writes. On a terminal it redraws one line in place; elsewhere it
    prints a plain line now and then, and always the last state."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.state: dict[str, Any] | None = None
        self._shown = ""            # the bar line currently on screen (live mode)
        self._last_plain = 0.0
        self._printed: dict[str, Any] | None = None   # the state last printed as a plain line
        self._lock = threading.RLock()

    def render(self, state: dict[str, Any]) -> str:
        done, total = state.get("done") or 0, state.get("total")
        percent = state.get("percent")
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = f"{done / elapsed:.1f}/s"
        if total:
            filled = int(BAR_WIDTH * min(percent or 0.0, 100.0) / 100)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            text = f"[{bar}] {percent or 0.0:5.1f}%  {_number(done)}/{_number(total)}  {rate}  "
            text += f"ETA {_duration(state.get('eta_s'))}"
        else:
            text = f"[{'?' * BAR_WIDTH}] {_number(done)} done  {rate}  elapsed {_duration(elapsed)}"
        if state.get("message"):
            text += f"  {state['message']}"
        return text

    def update(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.state = dict(state)
            if self.live:
                self._draw(self.render(state))
            elif time.monotonic() - self._last_plain >= PLAIN_INTERVAL_S:
                self._print_plain()

    def finish(self) -> None:
        """Leave the last state on its own line."""
        with self._lock:
            if self.state is None:
                return
            if self.live:
                self._draw(self.render(self.state))
                self.stream.write("\n")
                self._shown = ""
            elif self._printed != self.state:
                self._print_plain()
            self.stream.flush()

    def _print_plain(self) -> None:
        if self.state is None:
            return
        self._last_plain = time.monotonic()
        self._printed = self.state
        self.stream.write(self.render(self.state) + "\n")
        self.stream.flush()

    def _draw(self, text: str) -> None:
        pad = max(0, len(self._shown) - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._shown = text

    @contextmanager
    def cleared(self) -> Iterator[None]:
        """Take the bar off the line while something else is printed, then draw it again."""
        with self._lock:
            if not (self.live and self._shown):
                yield
                return
            self.stream.write("\r" + " " * len(self._shown) + "\r")
            shown, self._shown = self._shown, ""
            try:
                yield
            finally:
                self._draw(shown)


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
