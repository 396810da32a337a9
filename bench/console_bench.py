"""The console's jobs page with 10,000 jobs in the index: median and p95 answer time (target: 300 ms).

Seeds the job index and records directly in a private redis-server, then times `GET /ui/jobs` (the first page,
a later page through its cursor, and filtered pages) through the app's WSGI interface, Redis round trips
included, and the first page over HTTP from waitress.
Usage: `python bench/console_bench.py [--jobs 10000] [--requests 200]`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import waitress

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.app import create_app  # noqa: E402
from collector.cli.embedded import EmbeddedRedis  # noqa: E402
from collector.config import Config  # noqa: E402
from collector.store.records import connect  # noqa: E402
from collector.types import iso  # noqa: E402

TARGET_MS = 300.0
STATUSES = ["finished"] * 16 + ["started"] * 2 + ["failed", "queued"]
PLATFORMS = ["demo", "csv_source", "http_json", "sql_query"]


def seed(app: object, jobs: int) -> None:
    """`jobs` records with their index entries, one second apart, as the submitter and runner leave them."""
    svc = app.extensions["collector"]  # type: ignore[attr-defined]
    keys, now = svc.store.keys, time.time()
    with svc.connection.pipeline(transaction=False) as pipe:
        for n in range(jobs):
            job_id = f"bench{n:08d}"
            created = now - (jobs - n)
            status = STATUSES[n % len(STATUSES)]
            done = 100 if status == "finished" else n % 100
            pipe.hset(keys.job(job_id), mapping={
                "status": status, "platform_id": PLATFORMS[n % len(PLATFORMS)], "client_id": f"ref-{n}",
                "progress": json.dumps({"done": done, "total": 100, "percent": float(done), "eta_s": 3.0}),
                "created_at": iso(created), "started_at": iso(created + 0.5),
                **({"ended_at": iso(created + 0.9)} if status in ("finished", "failed") else {}),
            })
            pipe.zadd(keys.jobs_index(), {job_id: created})
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()


def timed(client: object, path: str, *, requests: int) -> tuple[float, float]:
    """Median and p95 in ms of `requests` GETs of `path` (after a few warm-up ones)."""
    for _ in range(5):
        client.get(path).close()  # type: ignore[attr-defined]
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(path)  # type: ignore[attr-defined]
        body = response.get_data()
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200 and b"<table" in body, (path, response.status_code)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def timed_http(app: object, path: str, *, requests: int) -> tuple[float, float]:
    """Median and p95 in ms of GETs of `path` over HTTP, the app served by waitress as `collector serve` does."""
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}{path}"  # type: ignore[union-attr]
    samples = []
    for n in range(requests + 5):  # the server thread is a daemon: it ends with the benchmark
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"<table" in response.read()
        if n >= 5:  # warm-up
            samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    server = EmbeddedRedis().start()
    try:
        with tempfile.TemporaryDirectory() as data:
            config = Config(redis_url=server.url, secret_key="bench-secret-key-0123456789abcdef", data_dir=data)
            app = create_app(config, connection=connect(server.url), dashboard=False)
            seed(app, args.jobs)
            client = app.test_client()
            first = client.get("/ui/jobs").get_data(as_text=True)
            cursor = re.search(r'cursor=([^"&]+)', first)
            paths = {"first page (50 jobs)": "/ui/jobs",
                     "second page (cursor)": f"/ui/jobs?cursor={cursor.group(1) if cursor else ''}",
                     "status=failed (1 in 20)": "/ui/jobs?status=failed",
                     "platform_id=demo": "/ui/jobs?platform_id=demo"}
            worst = 0.0
            print(f"GET /ui/jobs with {args.jobs} jobs in the index, {args.requests} requests each "
                  f"(target: p95 within {TARGET_MS:g} ms)")
            for name, path in paths.items():
                median, p95 = timed(client, path, requests=args.requests)
                worst = max(worst, p95)
                print(f"  {name:<26} median {median:6.1f} ms   p95 {p95:6.1f} ms")
            median, p95 = timed_http(app, "/ui/jobs", requests=args.requests)
            worst = max(worst, p95)
            print(f"  {'first page, over HTTP':<26} median {median:6.1f} ms   p95 {p95:6.1f} ms")
    finally:
        server.stop()
    print("OK" if worst <= TARGET_MS else f"MISSED: a p95 of {worst:.1f} ms is over {TARGET_MS:g} ms")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
