"""Starting and stopping the processes the benchmark measures, and reading queue state from Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOGS = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/collector-bench"))
SECRET_KEY = "bench-secret-key-of-at-least-32-bytes"  # workers refuse a key under 32 bytes


def env_for(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update({
        "COLLECTOR_REDIS_URL": redis_url,
        "COLLECTOR_SECRET_KEY": SECRET_KEY,
        "COLLECTOR_SUBMITS_PER_MINUTE": "0",  # the benchmark measures throughput, far past a client's rate
        "BENCH_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


class Procs:
    """Processes started for one measurement; `stop()` ends exactly these (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[subprocess.Popen[bytes]] = []
        LOGS.mkdir(parents=True, exist_ok=True)

    def start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(LOGS / f"{self.name}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, timeout_s: float = 20.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_exit(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            proc.wait(max(0.1, deadline - time.monotonic()))


def collector_pool(procs: Procs, redis_url: str, size: int = 2) -> None:
    procs.start([str(BIN / "collector"), "worker", "-n", str(size)], env_for(redis_url))


def rq_workers(procs: Procs, redis_url: str, queue: str, worker_class: str, count: int = 2) -> None:
    for _ in range(count):
        procs.start([str(BIN / "rq"), "worker", "--burst", "-w", worker_class, "-S", "rq.serializers.JSONSerializer",
                     "-u", redis_url, queue], env_for(redis_url))


def celery_worker(procs: Procs, redis_url: str, concurrency: int = 2) -> None:
    procs.start([str(BIN / "celery"), "-A", "bench.celery_app", "worker", "-P", "prefork", "-c", str(concurrency),
                 "-Q", "bench", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
                env_for(redis_url))


def gunicorn(procs: Procs, redis_url: str, app: str, port: int) -> None:
    """Both APIs are served the same way: gunicorn, 2 gthread workers of 4 threads; collector logs at INFO."""
    procs.start([str(BIN / "gunicorn"), "-k", "gthread", "-w", "2", "--threads", "4", "-b", f"127.0.0.1:{port}",
                 "--log-level", "warning", app], env_for(redis_url))
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=1)
        except urllib.error.HTTPError:
            return  # it answered (404)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn for {app} did not start; see {LOGS}") from None
            time.sleep(0.05)
        else:
            return


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.005) -> float:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic()


def drain_window(client: redis.Redis, list_key: str, total: int, timeout_s: float) -> tuple[float, float]:
    """Seconds the queue list took to go from 90 % to 10 % of `total` (steady state), and to empty."""
    started = time.monotonic()
    high = wait_until(lambda: client.llen(list_key) <= 0.9 * total, timeout_s, f"{list_key} to 90 %")
    low = wait_until(lambda: client.llen(list_key) <= 0.1 * total, timeout_s, f"{list_key} to 10 %")
    empty = wait_until(lambda: client.llen(list_key) == 0, timeout_s, f"{list_key} to empty")
    return low - high, empty - started
