"""How fast failures are noticed, and what the bookkeeping costs: run `python bench/reliability_bench.py`.

Measures, on a private redis-server and real `collector worker` pools:
  child kill   time from SIGKILL of a worker child to the job's record leaving `started`
  pool kill    time from SIGKILL of a whole pool to its job being retried (record leaves `started`), with a
               second pool alive to reap it
  drain        jobs/s a 1-worker pool drains (demo platform, 1 row: all record/event bookkeeping on) next to
               RQ's SimpleWorker draining a no-op function, both in burst mode on the same Redis
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import SECRET_KEY  # noqa: E402
from collector.cli.embedded import EmbeddedRedis  # noqa: E402
from collector.config import Config  # noqa: E402
from collector.specs.registry import Registry  # noqa: E402
from collector.submit.submitter import Submitter  # noqa: E402


def pool(url: str, size: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_REDIS_URL=url, COLLECTOR_SECRET_KEY=SECRET_KEY, COLLECTOR_LOG_LEVEL="WARNING",
               COLLECTOR_SHUTDOWN_GRACE_S="1")
    return subprocess.Popen([sys.executable, "-m", "collector", "worker", "-n", str(size), *extra], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait(predicate, timeout_s: float = 60.0, interval_s: float = 0.002):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError("gave up waiting")


def status(client: redis.Redis, job_id: str) -> str:
    return (client.hget(f"collector:job:{job_id}", "status") or b"").decode()


def submit_long(submitter: Submitter, client: redis.Redis) -> tuple[str, int]:
    job_id = submitter.submit({"platform_id": "demo", "settings": {"rows": 100000, "delay_s": 0.01},
                               "retry": {"max": 1, "backoff": 0.1, "jitter": 0}})["job_id"]
    wait(lambda: status(client, job_id) == "started")
    worker = client.hget(f"collector:job:{job_id}", "worker").decode()
    return job_id, int(client.hget(f"rq:worker:{worker}", "pid"))


def child_kills(url: str, submitter: Submitter, client: redis.Redis, runs: int) -> list[float]:
    proc = pool(url, 2)
    times = []
    try:
        wait(lambda: client.scard("rq:workers") >= 2)
        for _ in range(runs):
            job_id, pid = submit_long(submitter, client)
            os.kill(pid, signal.SIGKILL)
            killed = time.perf_counter()
            wait(lambda: status(client, job_id) != "started")  # noqa: B023
            times.append(time.perf_counter() - killed)
            client.hset(f"collector:job:{job_id}", "status", "stopped")  # not retried by the next round
            client.zrem("rq:scheduled:collector", job_id)
    finally:
        proc.terminate()
        proc.wait(30)
    return times


def pool_kills(url: str, submitter: Submitter, client: redis.Redis, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        client.flushall()
        doomed = pool(url, 1)
        wait(lambda: client.scard("rq:workers") >= 1)
        job_id, _ = submit_long(submitter, client)   # the only pool: the job runs on it
        survivor = pool(url, 1)
        wait(lambda: client.scard("rq:workers") >= 2)
        try:
            doomed.kill()
            killed = time.perf_counter()
            doomed.wait()
            wait(lambda: status(client, job_id) != "started", timeout_s=60, interval_s=0.01)  # noqa: B023
            times.append(time.perf_counter() - killed)
        finally:
            survivor.terminate()
            survivor.wait(60)
    return times


def drain(url: str, submitter: Submitter, client: redis.Redis, jobs: int) -> tuple[float, float]:
    """Jobs/s: the pool from its first job's start to its last job's end (fork and imports left out), and
    RQ's SimpleWorker in this process over the whole burst."""
    import datetime as dt

    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    client.flushall()
    ids = [submitter.submit({"platform_id": "demo", "settings": {"rows": 1}})["job_id"] for _ in range(jobs)]
    pool(url, 1, "--burst").wait(600)
    with client.pipeline() as pipe:
        for job_id in ids:
            pipe.hmget(f"collector:job:{job_id}", ["started_at", "ended_at"])
        times = pipe.execute()

    def parse(raw: bytes) -> float:
        return dt.datetime.fromisoformat(raw.decode().replace("Z", "+00:00")).timestamp()

    span = max(parse(e) for _, e in times) - min(parse(s) for s, _ in times)
    pool_rate = jobs / span
    client.flushall()
    queue = Queue("plain", connection=client, serializer=JSONSerializer)
    for _ in range(jobs):
        queue.enqueue_call("os.getpid")
    started = time.perf_counter()
    SimpleWorker([queue], connection=client, serializer=JSONSerializer).work(burst=True, logging_level="WARNING")
    rq_rate = jobs / (time.perf_counter() - started)
    return pool_rate, rq_rate


def describe(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: no runs"
    return (f"{name}: n={len(values)} median {statistics.median(values) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child-runs", type=int, default=5)
    parser.add_argument("--pool-runs", type=int, default=3)
    parser.add_argument("--drain-jobs", type=int, default=1000)
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        config = Config(redis_url=server.url, secret_key=SECRET_KEY)
        submitter = Submitter(connection=client, config=config, registry=Registry.discover("platforms"))
        print(describe("SIGKILL of a child -> record says so", child_kills(server.url, submitter, client,
                                                                       args.child_runs)))
        print(describe("SIGKILL of a whole pool -> its job retried", pool_kills(server.url, submitter, client,
                                                                              args.pool_runs)))
        if args.drain_jobs:
            pool_rate, rq_rate = drain(server.url, submitter, client, args.drain_jobs)
            print(f"drain of {args.drain_jobs} jobs: pool (1 worker, all bookkeeping) {pool_rate:.0f} jobs/s "
                  f"(first start to last end), RQ SimpleWorker {rq_rate:.0f} jobs/s: {pool_rate / rq_rate:.2f}x")
        client.close()


if __name__ == "__main__":
    main()
