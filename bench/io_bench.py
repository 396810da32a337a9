"""I/O-bound jobs: `python bench/io_bench.py [--jobs 2000]`; also a phase of bench/run.py.

Each job makes one GET of a local HTTP server (127.0.0.1) that answers after 100 ms: collector's `http_json`
platform under `collector worker -n 32` against a Celery task doing the same GET under prefork `-c 32`, on one
private Redis. Reported: jobs/s between the 10th and the 90th percent of jobs ended (not of the queue list: Celery
prefetches, so its list empties long before its tasks end), and the pool's memory while it runs: the
proportional set size (PSS, /proc/<pid>/smaps_rollup) of the pool's processes summed, supervisor or main
process and every child.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs as P
from bench.phases import config_for
from collector import egress
from collector.specs.registry import Registry
from collector.submit.submitter import Submitter

WAIT_S = 0.1
FINISHED_HTTP = "finished|http_json"


class SlowPage(http.server.BaseHTTPRequestHandler):
    """Answers every GET with an empty JSON list, WAIT_S seconds late."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(WAIT_S)
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def slow_server() -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowPage)
    server.daemon_threads = True
    server.request_queue_size = 128
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pss_kb(root: int) -> int:
    """PSS of `root` and all its descendants, in kB (processes that vanish while read count nothing)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _measure(done: Any, proc: Any, count: int) -> dict[str, float]:
    """Jobs/s between 10 % and 90 % of `count` ended (`done()` counts them), and the pool's PSS at 50 %."""
    first = P.wait_until(lambda: done() >= 0.1 * count, 300, "10 % ended", 0.01)
    P.wait_until(lambda: done() >= 0.5 * count, 300, "50 % ended", 0.01)
    pss = pss_kb(proc.pid)
    last = P.wait_until(lambda: done() >= 0.9 * count, 300, "90 % ended", 0.01)
    P.wait_until(lambda: done() >= count, 120, "all ended", 0.01)
    return {"rate": 0.8 * count / (last - first), "pss_mb": pss / 1024}


def io_collector(url: str, count: int, page: str, size: int = 32) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushall()
    config = dataclasses.replace(config_for(url), egress_allow="127.0.0.1")  # the page server is on loopback
    egress.install(egress.EgressPolicy.from_config(config))  # what the submit checks a job's URL against
    submitter = Submitter(connection=client, config=config, registry=Registry.discover("platforms"))
    for _ in range(count):
        submitter.submit({"platform_id": "http_json", "settings": {"url": page}})
    procs = P.Procs("io-collector")
    try:
        proc = procs.start([str(P.BIN / "collector"), "worker", "-n", str(size)],
                           P.env_for(url, COLLECTOR_EGRESS_ALLOW="127.0.0.1"))
        result = _measure(lambda: int(client.hget("collector:metrics", FINISHED_HTTP) or 0), proc, count)
    finally:
        procs.stop()
        client.close()
    return result


def io_celery(url: str, count: int, page: str, size: int = 32) -> dict[str, float]:
    from bench.celery_app import app

    client = redis.Redis.from_url(url)
    client.flushall()
    app.conf.broker_url = url
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("bench.http_wait", args=[page], producer=producer)
    procs = P.Procs("io-celery")
    try:
        P.celery_worker(procs, url, concurrency=size)
        result = _measure(lambda: int(client.get("bench:done") or 0), procs.procs[0], count)
    finally:
        procs.stop(60)
        client.close()
    return result


def io_phase(url: str, count: int = 2000, rounds: int = 1) -> dict[str, list[dict[str, float]]]:
    """Both systems in turn, `rounds` times, against one slow page server."""
    server = slow_server()
    page = f"http://127.0.0.1:{server.server_address[1]}/page"
    out: dict[str, list[dict[str, float]]] = {"c": [], "y": []}
    try:
        for _ in range(rounds):
            out["c"].append(io_collector(url, count, page))
            out["y"].append(io_celery(url, count, page))
    finally:
        server.shutdown()
    return out


def main() -> int:
    from collector.cli.embedded import EmbeddedRedis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with EmbeddedRedis() as redis_server:
        result = io_phase(redis_server.url, args.jobs, args.rounds)
    for name, key in (("collector worker -n 32", "c"), ("Celery prefork -c 32", "y")):
        print(f"{name}: " + "; ".join(f"{r['rate']:.0f} jobs/s, PSS {r['pss_mb']:.0f} MB" for r in result[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
