"""Worker instructions per job: `python bench/instructions.py [--jobs N] [--log-level L]`.

Timings on a shared machine move by a tenth from one minute to the next; instruction counts do not. This runs
collector's in-process worker (as a pool child runs: the claiming queue, a job's two scripts) under valgrind's
callgrind, once on 50 queued `demo` jobs (rows=1) and once on 50 + N, and reports the difference per job: what a
job costs the worker, its start-up and shutdown taken out. Only the worker is counted; redis-server and the submit
run outside valgrind. Needs valgrind (Debian's package). Repeats agree within about 1 %.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.phases import submit_demo
from collector.cli.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent

BASE_JOBS = 50

# What valgrind runs: one worker draining the queue, in this process, then exiting.
WORKER = """
import logging, os, sys
sys.path.insert(0, {root!r})
from rq.serializers import JSONSerializer
from bench.phases import config_for
from collector import logs
from collector.pool.children import CollectorWorker
from collector.run.runner import Runtime, install
from collector.specs.registry import Registry
from collector.store.claiming_queue import claiming_queue
from collector.store.records import connect
import dataclasses
url, level = sys.argv[1], sys.argv[2]
config = dataclasses.replace(config_for(url), log_level=level)
logs.setup(config, stream=open(os.devnull, "w"))  # formatted and written, as a pool child logs
connection = connect(url, blocking=True)
runtime = Runtime(config, connection, Registry.discover("platforms"), worker_name="instructions")
install(runtime)
worker = CollectorWorker(["collector"], connection=connection, name="instructions", serializer=JSONSerializer,
                         queue_class=claiming_queue("instructions"))
worker.runtime = runtime
worker.work(burst=True, logging_level=level)
"""


def instructions(url: str, jobs: int, level: str) -> int:
    """Instructions the worker process ran while draining `jobs` queued jobs (start-up and shutdown included)."""
    client = redis.Redis.from_url(url)
    client.flushall()
    submit_demo(url, jobs, {"rows": 1})
    script = Path(os.environ.get("TMPDIR", "/tmp")) / "collector-instructions-worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           str(script), url, level], capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    finished = int(client.hget("collector:metrics", "finished|demo") or 0)
    client.close()
    if done.returncode != 0 or found is None or finished != jobs:
        raise SystemExit(f"the worker under valgrind failed ({finished} of {jobs} jobs finished):\n"
                         f"{done.stderr[-3000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs counted, beyond the 50 of the baseline")
    parser.add_argument("--log-level", default="INFO", help="the worker's log level (the pool's default: INFO)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    with EmbeddedRedis() as server:
        base = instructions(server.url, BASE_JOBS, args.log_level)
        more = instructions(server.url, BASE_JOBS + args.jobs, args.log_level)
    per_job = (more - base) / args.jobs
    print(f"worker instructions per no-op job (callgrind, {args.jobs} jobs, logging at {args.log_level}): "
          f"{per_job / 1000:,.0f} k")
    return 0


if __name__ == "__main__":
    sys.exit(main())
