"""The storage benchmark runs and reports a ratio per batch size (its figures are bench/ business, not tests')."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_storage_bench_reports_a_ratio_per_batch_size() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "storage_bench.py"), "--only", "sqlite", "--rows", "3000",
         "--repeats", "2", "--batch", "1000", "--batch", "3000"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("| SQLite")]
    assert [line.split("|")[2].strip() for line in lines] == ["1,000", "3,000"]
    for line in lines:
        ratio = re.search(r"\| (\d+\.\d\d) \((\d+\.\d\d)-(\d+\.\d\d)\) \|$", line)
        assert ratio, line
        median, low, high = map(float, ratio.groups())
        assert 0 < low <= median <= high
