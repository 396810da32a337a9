"""What incremental state costs: Redis round trips and commands per job, and the cursor compare per row.

`python bench/state_bench.py` runs jobs in this process on a private redis-server (the runner as a worker calls
it, without RQ's dequeue), counting each job's round trips and commands: `csv_source` on a small file as given,
and with a `state_key` and a `cursor_field` (every run but the first, uncounted, starts from a saved bookmark), and
the saved state's size in Redis. Then times `Incremental.is_new` over a million datetime cursors. Takes seconds.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.roundtrips import _counting
from collector.cli.embedded import EmbeddedRedis
from collector.config import Config
from collector.incremental import Incremental
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.records import Keys, connect
from collector.submit.submitter import Submitter

JOBS = 100
ROWS = 1_000_000


def per_job(url: str, data_dir: str, body: dict[str, Any]) -> tuple[float, float]:
    """Round trips and commands of one run of `body`, averaged over JOBS runs (each submitted beforehand)."""
    config = Config(redis_url=url, secret_key="bench-secret-key-of-32-bytes-long", data_dir=data_dir)
    registry = Registry.discover("platforms")
    client = redis.Redis.from_url(url)
    submitter = Submitter(connection=client, config=config, registry=registry)
    ids = [submitter.submit(body)["job_id"] for _ in range(JOBS)]
    runtime = Runtime(config, connect(url, blocking=True), registry, worker_name="bench")
    execute(ids.pop(), runtime)  # the first run saves the bookmark and loads the scripts: not counted
    trips, _, commands = _counting(lambda: [execute(job_id, runtime) for job_id in ids], client)
    if body.get("state_key"):
        key = Keys(config.key_prefix).state(body["platform_id"], body["state_key"])
        print(f"  the saved state: {client.get(key)!r}, {client.memory_usage(key, samples=0)} B in Redis")
    client.close()
    return trips / len(ids), commands / len(ids)


def compare_cost() -> float:
    """Seconds per million `is_new` calls on datetimes against a saved bookmark."""
    incremental = Incremental("at", start=None, saved={"cursor_field": "at", "cursor": "2024-01-01T00:00:00",
                                                       "cursor_kind": "datetime"})
    base = dt.datetime(2023, 12, 1)
    values = [base + dt.timedelta(minutes=n) for n in range(ROWS)]
    started = time.perf_counter()
    kept = sum(1 for value in values if incremental.is_new(value))
    elapsed = time.perf_counter() - started
    assert 0 < kept < ROWS
    return elapsed


def main() -> None:
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as data_dir:
        (Path(data_dir) / "rows.csv").write_text("id,at\n1,2024-05-01T10:00:00\n2,2024-05-02T10:00:00\n")
        plain = {"platform_id": "csv_source", "settings": {"path": "rows.csv"}}
        incremental = {**plain, "state_key": "bench", "settings": {"path": "rows.csv", "cursor_field": "at"}}
        for name, body in (("csv_source as given", plain), ("csv_source, state_key + cursor_field", incremental)):
            trips, commands = per_job(server.url, data_dir, body)
            print(f"{name}: {trips:.1f} round trips, {commands:.1f} commands per job")
    print(f"Incremental.is_new x{ROWS:,} (datetimes): {compare_cost():.3f} s")


if __name__ == "__main__":
    main()
