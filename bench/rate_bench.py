"""A rate limit shared by two pools: run `python bench/rate_bench.py`.

On a private redis-server, two `collector worker -n 4` pools run jobs of `tests/paced_platforms/paced.py`
(`RATE_LIMIT = "10/s"`), each job GETting a local HTTP server on 127.0.0.1 many times through the HTTP client. The
server notes when each request arrives. Reported, over a window of `--seconds` (30) starting `--warmup` (2) s after
the first request, while the eight children compete for tokens:
  rate       requests per second that reached the server, and how far it is from the limit (target: within 10 %)
  per pool   requests sent by each pool's jobs (both pools must share the limit)
  1 s peak   the most requests in any one second of the window
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.cli.embedded import EmbeddedRedis  # noqa: E402
from collector.config import Config  # noqa: E402
from collector.specs.registry import Registry  # noqa: E402
from collector.submit.submitter import Submitter  # noqa: E402

SECRET = "bench-secret-key-of-32-bytes-or-more"
PACKAGE = "tests.paced_platforms"
LIMIT = 10.0


class Source:
    """A local HTTP server noting when each request arrived and which job sent it."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                job = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)).get("job", "")
                source.arrivals.append((time.monotonic(), job))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/items"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def pool(url: str, size: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_REDIS_URL=url, COLLECTOR_SECRET_KEY=SECRET, COLLECTOR_LOG_LEVEL="WARNING",
               COLLECTOR_SHUTDOWN_GRACE_S="1", COLLECTOR_PLATFORMS_PACKAGE=PACKAGE,
               COLLECTOR_EGRESS_ALLOW="127.0.0.1")
    return subprocess.Popen([sys.executable, "-m", "collector", "worker", "-n", str(size)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait(predicate: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("gave up waiting")


def one_run(*, seconds: float, warmup: float, children: int) -> dict[str, Any]:
    server = EmbeddedRedis()
    server.start()
    source = Source()
    pools: list[subprocess.Popen[bytes]] = []
    try:
        client = redis.Redis.from_url(server.url)
        pools = [pool(server.url, children) for _ in range(2)]
        wait(lambda: client.scard("rq:workers") >= 2 * children)
        config = Config(redis_url=server.url, secret_key=SECRET, platforms_package=PACKAGE)
        submitter = Submitter(connection=client, config=config, registry=Registry.discover(PACKAGE))
        needed = int((seconds + warmup + 4) * LIMIT)             # enough requests to keep the limit busy throughout
        jobs, per_job = 4 * children, -(-needed // (4 * children))
        spec = {"platform_id": "paced", "settings": {"url": source.url, "requests": per_job}}
        ids = [submitter.submit(spec)["job_id"] for _ in range(jobs)]
        wait(lambda: source.arrivals)
        start = source.arrivals[0][0] + warmup
        wait(lambda: time.monotonic() > start + seconds + 0.5, timeout_s=seconds + warmup + 30)
        window = [(at, job) for at, job in list(source.arrivals) if start <= at < start + seconds]
        pool_of = {job_id: (client.hget(f"collector:job:{job_id}", "pool") or b"?").decode() for job_id in ids}
        per_pool: dict[str, int] = {}
        for _, job in window:
            per_pool[pool_of.get(job, "?")] = per_pool.get(pool_of.get(job, "?"), 0) + 1
        times = [at for at, _ in window]
        peak = max(sum(1 for t in times[i:] if t < first + 1.0) for i, first in enumerate(times))
        rate = len(window) / seconds
        return {"requests": len(window), "rate": rate, "off_pct": 100 * (rate - LIMIT) / LIMIT, "peak": peak,
                "per_pool": dict(sorted(per_pool.items()))}
    finally:
        for process in pools:
            process.terminate()
        for process in pools:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        source.httpd.shutdown()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds after the first request not measured")
    parser.add_argument("--children", type=int, default=4, help="children of each of the two pools")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    for n in range(1, args.runs + 1):
        found = one_run(seconds=args.seconds, warmup=args.warmup, children=args.children)
        pools = ", ".join(f"{name} {count}" for name, count in found["per_pool"].items())
        verdict = "within" if abs(found["off_pct"]) <= 10 else "OUTSIDE"
        print(f"run {n}: {found['requests']} requests in {args.seconds:g} s = {found['rate']:.2f}/s for a limit of "
              f"{LIMIT:g}/s ({found['off_pct']:+.1f} %, {verdict} +-10 %); per pool: {pools}; "
              f"most in one second: {found['peak']}", flush=True)


if __name__ == "__main__":
    main()
