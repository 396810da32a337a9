"""Where a job's time goes: `python bench/profile_job.py [JOBS]` profiles collector's worker and RQ's SimpleWorker.

Each drains JOBS queued jobs in this process (no fork, one worker) under cProfile; the table shows the
time per job spent in each stage (cumulative: a stage includes what it calls), with the Redis round trips
per job from bench/roundtrips.py.
"""

from __future__ import annotations

import cProfile
import logging
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import roundtrips
from collector.cli.embedded import EmbeddedRedis

# (label, file suffix, function name): the stages of one job, outermost first.
STAGES = [
    ("whole job: execute_job + the loop's heartbeat", "rq/worker/base.py", "work"),
    ("dequeue: wait, LMOVE, fetch the job", "rq/worker/base.py", "dequeue_job_and_maintain_ttl"),
    ("RQ: prepare_execution (execution record)", "rq/executions.py", "prepare_execution"),
    ("RQ: prepare_job_execution (worker + job state)", "rq/worker/base.py", "prepare_job_execution"),
    ("the job function (collector: runner.execute)", "rq/job.py", "_execute"),
    ("  collector: end-of-job pipeline (runner._end)", "collector/run/runner.py", "_end"),
    ("  collector: settings schema built and loaded", "collector/specs/schema.py", "schema"),
    ("  the platform's _run", "platforms/demo.py", "_run"),
    ("RQ: handle_job_success (result, registries)", "rq/worker/base.py", "handle_job_success"),
    ("logging at INFO to /dev/null (RQ's lines and collector's)", "logging/__init__.py", "_log"),
    ("every Redis pipeline (RQ's and collector's)", "redis/client.py", "execute"),
    ("worker heartbeats", "rq/worker/base.py", "heartbeat"),
]


def profile(name: str, measure, url: str, jobs: int) -> dict[str, float]:
    measure(url, 20)  # warm up imports and caches
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    measure(url, jobs)
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    out = {"wall": wall / jobs}
    for label, suffix, func in STAGES:
        total = sum(v[3] for (file, _, fn), v in stats.items() if fn == func and file.endswith(suffix))
        out[label] = total / jobs
    return out


def main() -> int:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    # As the pool runs: INFO lines formatted and written (to nowhere, so the terminal is not the cost).
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))
    roundtrips.LOGGING_LEVEL = "INFO"
    with EmbeddedRedis() as server:
        # the submit of collector's jobs happens inside `collector_worker` too: profile only the worker part
        results = {
            "collector": profile("collector", roundtrips.collector_worker, server.url, jobs),
            "rq_simple": profile("rq_simple", roundtrips.rq_simple_worker, server.url, jobs),
        }
        trips = roundtrips.per_job(server.url)
    print(f"| stage, ms per job (cProfile, {jobs} jobs, one in-process worker) | collector | RQ SimpleWorker |")
    print("|---|---:|---:|")
    for label, _, _ in STAGES:
        print(f"| {label} | {results['collector'][label] * 1000:.3f} | {results['rq_simple'][label] * 1000:.3f} |")
    print(f"| Redis round trips / commands per job | {trips['collector'][0]:.0f} / {trips['collector'][2]:.0f} "
          f"| {trips['rq_simple'][0]:.0f} / {trips['rq_simple'][2]:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
