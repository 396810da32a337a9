"""Figures of the platform author's kit: `collector run` start-up, in-process run cost, check round trip.

    .venv/bin/python bench/devkit.py

Starts its own redis-server on a free port and a 1-worker pool; touches nothing else.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import redis

from collector.app import create_app
from collector.cli.embedded import EmbeddedRedis
from collector.config import Config
from collector.devkit.local import local_runtime, run_local
from collector.sealing import new_key

ROOT = Path(__file__).resolve().parent.parent


def cli_run_seconds(runs: int = 5) -> list[float]:
    """Wall time of `python -m collector run` for a 1-row demo job: process start, discovery, run, exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "collector", "run", "-"], input='{"platform_id": "demo",'
                       ' "settings": {"rows": 1}}', text=True, capture_output=True, check=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return times


def in_process_ms(jobs: int = 300) -> float:
    """Mean cost of one `run_local` (validate, record, execute, read back) of a 1-row job on fakeredis."""
    runtime = local_runtime(Config())
    started = time.perf_counter()
    for _ in range(jobs):
        assert run_local({"platform_id": "demo", "settings": {"rows": 1}}, runtime).ok
    return (time.perf_counter() - started) / jobs * 1000


def progress_ns(rows: int = 200_000) -> float:
    """Cost per `ctx.progress` call in a local run with the bar observing (demo: one call per row)."""
    runtime = local_runtime(Config())
    calls = 0

    def observe(_: dict) -> None:
        nonlocal calls
        calls += 1

    started = time.perf_counter()
    assert run_local({"platform_id": "demo", "settings": {"rows": rows}}, runtime, on_progress=observe).ok
    return (time.perf_counter() - started) / rows * 1e9


def check_round_trips(url: str, checks: int = 30) -> list[float]:
    """`POST /platforms/check` answered by an idle worker: request → enqueue → worker → answer."""
    from werkzeug.serving import make_server

    key = new_key()
    config = Config(redis_url=url, secret_key=key)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_REDIS_URL=url, COLLECTOR_SECRET_KEY=key)
    with tempfile.TemporaryFile() as log:
        pool = subprocess.Popen([sys.executable, "-m", "collector", "worker", "-n", "1"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        server = make_server("127.0.0.1", 0, create_app(config, dashboard=False), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 30
            while not client.smembers("rq:workers"):
                if time.monotonic() > deadline:
                    raise SystemExit("the worker pool did not start")
                time.sleep(0.05)
            body = json.dumps({"platform_id": "demo", "settings": {}}).encode()
            times = []
            for _ in range(checks):
                request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/platforms/check",
                                                 data=body, headers={"Content-Type": "application/json"})
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert json.loads(response.read())["ok"] is True
                times.append(time.perf_counter() - started)
            return times
        finally:
            server.shutdown()
            pool.terminate()
            pool.wait(30)


def main() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per check would bury the figures
    cli = cli_run_seconds()
    print(f"collector run (1-row demo job, whole process): median {statistics.median(cli) * 1000:.0f} ms")
    print(f"run_local in process (1-row demo job):          {in_process_ms():.2f} ms per job")
    print(f"ctx.progress in a local run, bar observing:      {progress_ns():.0f} ns per call (incl. the row)")
    with EmbeddedRedis() as server:
        rounds = sorted(check_round_trips(server.url))
        p95 = rounds[int(len(rounds) * 0.95) - 1]
        print(f"POST /platforms/check via an idle worker:       median {statistics.median(rounds) * 1000:.1f} ms, "
              f"p95 {p95 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
