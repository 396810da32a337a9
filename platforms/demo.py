"""A made-up source for trying the service: numbered rows, optionally slow, optionally failing."""

from __future__ import annotations

import time

from collector.platform import FatalError, Platform


class Demo(Platform):
    """Generates `rows` numbered rows, sleeping `delay_s` per row; raises at row `fail_at` when set."""

    def __init__(self, rows: int = 100, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        if rows < 0:
            raise ValueError(f"rows={rows} is negative; give 0 or more")
        self.rows, self.delay_s, self.fail_at = rows, delay_s, fail_at

    def _run(self, ctx):
        original = []
        for n in range(1, self.rows + 1):
            if self.fail_at is not None and n == self.fail_at:
                raise FatalError(f"demo failure at row {n} (fail_at={self.fail_at})")
            if self.delay_s:
                time.sleep(self.delay_s)
            original.append({"n": n, "value": n * n})
            ctx.progress(n, self.rows, f"row {n} of {self.rows}")
        ctx.dataset("original", original)
        ctx.dataset("processed", [{"n": r["n"], "value": r["value"], "even": r["value"] % 2 == 0} for r in original])
        return {"rows": len(original)}
