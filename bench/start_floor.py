"""How fast can any worker that confirms a job's start before running it drain 10 ms jobs, against Celery prefork?

`python bench/start_floor.py [--rounds 3] [--jobs 400]` measures, in interleaved rounds on one private Redis:

- **Celery prefork**, 2 children, draining `--jobs` tasks that sleep 10 ms (`bench/phases.py`'s `drain_celery`);
- **the floor**: 2 processes, each running jobs that sleep 10 ms, with nothing between two jobs but one round trip
  to Redis that must be answered before the next job runs. Two variants of that round trip:
  - `minimal`: a one-line Lua script (one HINCRBY): the cheapest atomic write a start could be;
  - `start`: collector's own start script (`store/starts.py`) on a queued job's record, without the worker's RQ
    writes that go with it in the pool;
- **the bare sleep**: the same 2 processes with no round trip at all;
- **a child with a second thread**, the best a worker loop of collector's own could do: the start script answered
  before each job, as in `start`, and everything else a job costs the child done by a second thread while the job
  sleeps (`HELPER_CPU_MS` of Python and one script round trip on a connection of its own: the last job's end, the
  next job taken and prepared), in two variants:
  - `thread`: the run context and platform still built in series, between the start's answer and the run
    (`SERIES_CPU_MS` of Python);
  - `thread-ahead`: those built ahead too, so only the start stays in series;
- **collector's pool** as it is, `collector worker -n 2` draining the `demo` platform's 10 ms jobs.

The floor is a bound, not a worker: nothing is taken from a queue, no job is built, no end is written. It is what
a worker would reach whose every other piece of work (the take, the record's end, the job's context) cost nothing
in series, done by a second thread while the job sleeps. When Celery drains faster than the floor, no worker that
waits for its start's answer before running a job can drain 10 ms jobs at 1.0x Celery on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path

import redis
from redis.commands.core import Script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import phases
from collector import defaults
from collector.cli.embedded import EmbeddedRedis
from collector.run.runner import START_FIELDS
from collector.store import scripts, starts
from collector.store.records import Keys

MINIMAL = Script(None, b"return redis.call('HINCRBY', KEYS[1], 'attempt', 1)")
SLEEP_S = 0.01
WORKERS = 2
# What a job costs collector's child between one run and the next, measured in-process (`bench/RESULTS.md`): the
# record's end and RQ's end built (0.81 ms) and RQ's loop taking the next job (0.84 ms) could move to a second
# thread; the start read, the context and the platform built (0.50 ms) sit between the start's answer and the run.
HELPER_CPU_MS = 1.65
SERIES_CPU_MS = 0.50


def _busy(ms: float) -> None:
    """Python kept busy (holding the GIL, as building a job's writes does) for `ms` milliseconds."""
    until = time.perf_counter() + ms / 1000
    while time.perf_counter() < until:
        sum(range(50))


def _second_thread(client: redis.Redis, key: str) -> tuple[threading.Semaphore, threading.Semaphore]:
    """A thread that, each time it is released, does a job's share of Python and one round trip; (go, done)."""
    go, done = threading.Semaphore(0), threading.Semaphore(1)

    def work() -> None:
        while True:
            go.acquire()
            _busy(HELPER_CPU_MS)
            scripts.call(MINIMAL, keys=[key], args=[], client=client)
            done.release()

    threading.Thread(target=work, daemon=True).start()
    return go, done


def _loop(url: str, kind: str, job_ids: list[str], out: multiprocessing.Queue) -> None:
    """One worker process: a round trip of `kind` (or none), then a 10 ms sleep, per job; puts its jobs/s."""
    client = redis.Redis.from_url(url)
    keys = Keys(defaults.KEY_PREFIX)

    def confirm(job_id: str) -> None:
        if kind == "minimal":
            scripts.call(MINIMAL, keys=[keys.job(job_id)], args=[], client=client)
        elif kind != "bare":
            starts.start(client, keys, job_id, fields=START_FIELDS,
                         values={"status": "started", "worker": "floor", "lease": "0" * 16},
                         event={"worker": "floor", "type": "started"})

    threaded = kind.startswith("thread")
    series_ms = SERIES_CPU_MS if kind == "thread" else 0.0
    if threaded:
        go, done = _second_thread(redis.Redis.from_url(url), keys.job("second-thread"))
    for job_id in job_ids[:10]:  # warm: the scripts loaded, the connection made
        confirm(job_id)
    began = time.perf_counter()
    for job_id in job_ids[10:]:
        if threaded:
            done.acquire()  # the second thread is through with the last job (it is, unless it fell behind)
        confirm(job_id)
        if threaded:
            _busy(series_ms)
            go.release()
        time.sleep(SLEEP_S)
    out.put((len(job_ids) - 10) / (time.perf_counter() - began))
    client.close()


def floor(url: str, kind: str, count: int) -> float:
    """Jobs/s of WORKERS processes that each run count/WORKERS 10 ms jobs, each after a round trip of `kind`."""
    client = redis.Redis.from_url(url)
    client.flushall()
    phases.submit_demo(url, count, {"rows": 1, "delay_s": SLEEP_S})  # records for the start script to start
    prefix = f"{defaults.KEY_PREFIX}:job:"
    job_ids = [key.decode()[len(prefix):] for key in client.scan_iter(f"{prefix}*", count=1000)
               if key.decode().count(":") == 2]
    client.close()
    share = len(job_ids) // WORKERS
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_loop, args=(url, kind, job_ids[i * share:(i + 1) * share], out))
             for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    rates = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=400, help="10 ms jobs per measurement")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {kind: [] for kind in ("celery", "bare", "minimal", "start", "thread",
                                                          "thread-ahead", "collector")}
    with EmbeddedRedis() as server:
        for number in range(1, args.rounds + 1):
            rows["celery"].append(phases.drain_celery(server.url, args.jobs, "bench.sleep10")["rate"])
            for kind in ("bare", "minimal", "start", "thread", "thread-ahead"):
                rows[kind].append(floor(server.url, kind, args.jobs))
            rows["collector"].append(phases.drain_collector(server.url, args.jobs,
                                                            {"rows": 1, "delay_s": SLEEP_S})["rate"])
            print(f"round {number}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items()), flush=True)
    print(f"\n| 10 ms jobs, 2 workers, jobs/s | {' | '.join(f'round {i}' for i in range(1, args.rounds + 1))} "
          "| median ratio to Celery (per round) |")
    print("|---|" + "---:|" * (args.rounds + 1))
    labels = {"celery": "Celery prefork (`-c 2`)", "bare": "bare sleep, nothing between jobs",
              "minimal": "floor: one minimal script answered before each job",
              "start": "floor: collector's start script answered before each job",
              "thread": f"the start answered, {SERIES_CPU_MS} ms in series, {HELPER_CPU_MS} ms and a round trip "
                        "on a second thread",
              "thread-ahead": f"the start answered, nothing else in series, {HELPER_CPU_MS} ms and a round trip "
                              "on a second thread",
              "collector": "collector's pool (`collector worker -n 2`), as it is"}
    for kind, label in labels.items():
        ratio = statistics.median(v / c for v, c in zip(rows[kind], rows["celery"], strict=True))
        print(f"| {label} | {' | '.join(f'{v:.1f}' for v in rows[kind])} | {ratio:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
