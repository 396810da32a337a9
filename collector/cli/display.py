"""Terminal output of the CLI: the live progress bar (client and `collector run`) with log lines printed above
it, tables, job summaries."""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

BAR_WIDTH = 24


def duration(seconds: float | None) -> str:
    """`4.2s`, `3m05s`, `2h03m`: short enough for a progress line."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def number(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"


class Rate:
    """Units per second, smoothed over recent polls so one slow poll does not swing the estimate."""

    def __init__(self, smoothing: float = 0.3) -> None:
        self.smoothing = smoothing
        self.value: float | None = None
        self._last: tuple[float, float] | None = None

    def update(self, done: float, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        if self._last is not None:
            last_done, last_at = self._last
            if now > last_at and done >= last_done:
                sample = (done - last_done) / (now - last_at)
                previous = sample if self.value is None else self.value
                self.value = self.smoothing * sample + (1 - self.smoothing) * previous
        self._last = (done, now)
        return self.value


def progress_line(view: dict[str, Any], rate: float | None, *, width: int | None = None) -> str:
    """`started [#########...........]  42.4%  212/500 rows  35.1/s  ETA 3.3s  row 212 of 500`."""
    progress = view.get("progress") or {}
    done, total, percent = progress.get("done"), progress.get("total"), progress.get("percent")
    filled = int(BAR_WIDTH * (percent or 0) / 100)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    parts = [f"{view.get('status', '?'):<8} [{bar}] {percent if percent is not None else 0:5.1f}%"]
    if done is not None:
        parts.append(f"{number(done)}/{number(total)} rows" if total else f"{number(done)} rows")
    if rate is not None:
        parts.append(f"{rate:,.1f}/s")
    eta = progress.get("eta_s")
    if eta is None and rate and total and done is not None:
        eta = max(0.0, (total - done) / rate)
    if eta is not None and view.get("status") not in ("finished", "failed"):
        parts.append(f"ETA {duration(eta)}")
    if progress.get("message"):
        parts.append(str(progress["message"]))
    line = "  ".join(parts)
    width = width or shutil.get_terminal_size((100, 20)).columns
    return line[: max(20, width - 1)]


NOT_RUNNING = frozenset({"queued", "scheduled", "deferred", "waiting"})  # a job waiting to run (again)


class ProgressBar:
    """A job's progress on one line, for `collector submit --wait` and `collector run`.

    On a terminal it redraws the line in place, and `cleared` takes it off while a log line is printed
    above it. Elsewhere (a pipe, a CI log) it prints the line when it changed, at most every `log_every_s`,
    and always the last one.
    """

    def __init__(self, stream: TextIO, *, live: bool | None = None, log_every_s: float = 5.0) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.log_every_s = log_every_s
        self.rate = Rate()
        self.rate.update(0.0)       # the job starts from nothing when the bar does: one update gives a rate
        self._line = ""             # the line last rendered
        self._shown = ""            # the line on screen (live)
        self._printed = ""          # the line last printed (not live)
        self._last_print = -math.inf
        self._lock = threading.RLock()      # log lines may come from other threads
        self._between_runs = False          # the last view was of a job waiting to run (again)

    def update(self, view: dict[str, Any], *, last: bool = False) -> None:
        """Show `view`'s progress (a job view: status and progress); `last` (the job ended) always prints. A job
        that waits to run (again) shows no progress: what its record holds is an earlier run's (a job retried by
        hand), and the rate starts anew from where the next run starts."""
        with self._lock:
            if view.get("status") in NOT_RUNNING:
                view = {**view, "progress": None}
                self._between_runs = True
            done = (view.get("progress") or {}).get("done")
            rate = None
            if done is not None and self._between_runs:
                self._between_runs = False
                self.rate = Rate()
                self.rate.update(float(done))   # this run's first reading: its rate comes with the next
            elif done is not None:
                rate = self.rate.update(float(done))
            self._line = progress_line(view, rate)
            if self.live:
                self._draw(self._line)
            elif last or (self._line != self._printed and time.monotonic() - self._last_print >= self.log_every_s):
                self._print_plain()

    def close(self) -> None:
        """Leave the last line on its own: end it on a terminal, print it elsewhere if it was not."""
        with self._lock:
            if self.live and self._shown:
                self.stream.write("\n")
                self._shown = ""
            elif not self.live and self._line != self._printed:
                self._print_plain()
            self.stream.flush()

    @contextmanager
    def cleared(self) -> Iterator[None]:
        """Take the bar off its line while something else is printed there, then draw it again below."""
        with self._lock:
            if not (self.live and self._shown):
                yield
                return
            self.stream.write("\r\x1b[K")
            shown, self._shown = self._shown, ""
            try:
                yield
            finally:
                self._draw(shown)

    def _draw(self, line: str) -> None:
        self.stream.write("\r" + line + "\x1b[K")     # then erase what a longer line left to the right
        self.stream.flush()
        self._shown = line

    def _print_plain(self) -> None:
        self._printed, self._last_print = self._line, time.monotonic()
        self.stream.write(self._line + "\n")
        self.stream.flush()


def summary(view: dict[str, Any]) -> str:
    """What `submit --wait` prints when the job has ended."""
    lines = [f"job {view.get('job_id')} {view.get('status')} ({view.get('platform_id')})"]
    started, ended = view.get("started_at"), view.get("ended_at")
    if started and ended:
        lines.append(f"  ran      {duration(_seconds_between(started, ended))} (attempt {view.get('attempt')})")
    if view.get("result") is not None:
        lines.append(f"  result   {json.dumps(view['result'])}")
    for name, info in (view.get("datasets") or {}).items():
        if isinstance(info, dict):
            cut = (f" (the first of {number(info.get('total_rows'))}; the rest was not kept)"
                   if info.get("truncated") else "")
            lines.append(f"  dataset  {name}: {number(info.get('rows'))} rows, {number(info.get('bytes'))} bytes{cut}")
    if view.get("error"):
        error = view["error"]
        lines.append(f"  error    {error.get('type')}: {error.get('message')}")
    return "\n".join(lines)


def _seconds_between(start: str, end: str) -> float | None:
    import datetime as dt

    try:
        return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Left-aligned columns, as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def record(view: dict[str, Any], *, pretty: bool = False) -> str:
    """`GET /execution/get` as `field  value` lines; nested values as compact JSON, except the datasets' rows
    with `pretty` (a person reading `get --full` on a terminal): indented JSON under the field."""
    width = max((len(k) for k in view), default=0)
    out = []
    for key, value in view.items():
        if pretty and key == "datasets" and value:
            out.append(key)
            out.append("\n".join("  " + line for line in json.dumps(value, indent=2, default=str).splitlines()))
            continue
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        out.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(out)


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
