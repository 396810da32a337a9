"""The client's terminal output: progress line, rate, tables, summaries."""

from __future__ import annotations

import io

from collector import defaults
from collector.cli.display import ProgressBar, Rate, duration, progress_line, summary, table


def test_progress_line_shows_percent_rows_rate_eta_and_message() -> None:
    view = {"status": "started",
            "progress": {"done": 212, "total": 500, "percent": 42.4, "message": "row 212", "eta_s": 3.3}}
    line = progress_line(view, 35.06, width=200)
    assert line.startswith("started  [##########..............]  42.4%")
    assert "212/500 rows" in line and "35.1/s" in line and "ETA 3.3s" in line and line.endswith("row 212")
    assert len(progress_line(view, 35.0, width=30)) == 29


def test_rate_is_smoothed_units_per_second() -> None:
    rate = Rate(smoothing=0.5)
    assert rate.update(0, now=0.0) is None
    assert rate.update(10, now=1.0) == 10.0
    assert rate.update(40, now=2.0) == 20.0


def test_bar_redraws_in_place_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = ProgressBar(out)
    for done in (1, 2):
        bar.update({"status": "started", "progress": {"done": done, "total": 4, "percent": 25.0 * done}})
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.count("\x1b[K") == 2 and "50.0%" in text and text.endswith("\x1b[K\n")


def test_summary_table_and_durations() -> None:
    text = summary({"job_id": "j", "status": "failed", "platform_id": "demo", "attempt": 1,
                    "started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:01:05.000Z",
                    "error": {"type": "FatalError", "message": "no"},
                    "datasets": {"original": {"rows": 3, "bytes": 9}}})
    assert "job j failed (demo)" in text and "1m05s" in text and "FatalError: no" in text and "3 rows" in text
    assert table([("a", None)], ["X", "LONGER"]) == "X  LONGER\na"
    assert (duration(None), duration(7322)) == ("?", "2h02m")


def test_the_next_page_hint_keeps_the_filters_and_the_page_size() -> None:
    import argparse

    from collector.cli.client import next_page_command

    filtered = argparse.Namespace(status="failed", platform="my source", limit=5)
    assert next_page_command(filtered, "c1") == "collector list --status failed --platform 'my source' --limit 5 " \
                                                "--cursor c1"
    plain = argparse.Namespace(status=None, platform=None, limit=defaults.LIST_LIMIT)
    assert next_page_command(plain, "c2") == "collector list --cursor c2"


def test_a_job_retried_by_hand_shows_no_progress_of_its_earlier_run_and_a_rate_of_its_own() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, live=False, log_every_s=0)
    bar.update({"status": "queued", "progress": {"done": 109, "total": 400, "percent": 27.2}})
    assert "queued" in out.getvalue() and "109/400" not in out.getvalue() and "/s" not in out.getvalue()
    bar.update({"status": "started", "progress": {"done": 10, "total": 400, "percent": 2.5}})
    assert out.getvalue().splitlines()[-1].endswith("10/400 rows"), "no rate from one reading"
    bar.rate._last = (10.0, bar.rate._last[1] - 1.0)   # that reading, a second ago
    bar.update({"status": "started", "progress": {"done": 30, "total": 400, "percent": 7.5}})
    assert out.getvalue().splitlines()[-1].endswith("30/400 rows  20.0/s  ETA 18.5s"), out.getvalue()
