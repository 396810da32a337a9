"""A date range split into one sub-job per day, which the worker pool runs in parallel; the totals are summed."""

from __future__ import annotations

import datetime as dt
import time

from collector.platform import FatalError, Platform


class DatePartitions(Platform):
    """Counts made-up rows per day from `start_date` to `end_date`. A range of several days spawns one child
    job per day (this platform, one day each) and sums their results; a one-day range collects that day."""

    MAX_DAYS = 366

    def __init__(
        self,
        start_date: dt.date,
        end_date: dt.date = "yesterday",
        rows_per_day: int = 24,
        delay_s: float = 0.0,
        fail_on: dt.date | None = None,
    ) -> None:
        if end_date < start_date:
            raise ValueError(f"end_date {end_date} is before start_date {start_date}; swap them")
        days = (end_date - start_date).days + 1
        if days > self.MAX_DAYS:
            raise ValueError(f"the range has {days} days, over {self.MAX_DAYS}; split it into smaller ranges")
        if rows_per_day < 0 or delay_s < 0:
            raise ValueError("rows_per_day and delay_s must be 0 or more")
        self.start_date, self.end_date = start_date, end_date
        self.rows_per_day, self.delay_s, self.fail_on = rows_per_day, delay_s, fail_on

    def _run(self, ctx):
        if self.start_date == self.end_date:
            return self._collect_day(ctx, self.start_date)
        day, days = self.start_date, []
        while day <= self.end_date:
            days.append(day)
            day += dt.timedelta(days=1)
        for day in days:  # same order on every attempt: spawn hands back the children queued before
            settings = {"start_date": day.isoformat(), "end_date": day.isoformat(),
                        "rows_per_day": self.rows_per_day, "delay_s": self.delay_s}
            if self.fail_on is not None:
                settings["fail_on"] = self.fail_on.isoformat()
            ctx.spawn("date_partitions", settings)
        ctx.progress(0, len(days), f"{len(days)} days queued as sub-jobs")
        children = ctx.wait_children()  # raises ChildJobError naming the first day that failed
        per_day = {child["result"]["from"]: child["result"]["rows"] for child in children.values()}
        ctx.progress(len(days), len(days), "all days collected")
        ctx.dataset("processed", [{"day": d, "rows": n} for d, n in sorted(per_day.items())])
        return {"days": len(days), "rows": sum(per_day.values()), "from": self.start_date.isoformat(),
                "to": self.end_date.isoformat()}

    def _collect_day(self, ctx, day: dt.date) -> dict:
        if self.fail_on == day:
            raise FatalError(f"the source has no data for {day} (fail_on={day})")
        rows = []
        for hour in range(self.rows_per_day):
            if self.delay_s:
                time.sleep(self.delay_s)
            rows.append({"day": day.isoformat(), "n": hour, "value": (day.toordinal() + hour) % 97})
            ctx.progress(hour + 1, self.rows_per_day, f"{day} row {hour + 1}")
        ctx.dataset("original", rows)
        return {"days": 1, "rows": len(rows), "from": day.isoformat(), "to": day.isoformat()}
