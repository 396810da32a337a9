"""Priorities and idempotency keys under load: run `python bench/priority_bench.py`.

Measures, on a private redis-server, a real `collector worker` pool and the API served over HTTP:
  high behind low   a pool of 2 children busy with 1,000 queued low jobs (each holds a child 0.2 s, so the
                    backlog is ~100 s of work): time from the answer to a high job's submit to its `started_at`,
                    for several high jobs in turn (target: each under 1 s)
  drain             jobs/s the same pool drains of no-op jobs spread over the three lanes (burst mode)
  one key           100 threads POST the same spec with one idempotency key at once over HTTP to `collector serve`
                    (waitress, as deployed): jobs made (target: 1), answers 202 / 200, and the slowest answer
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.cli.embedded import EmbeddedRedis  # noqa: E402
from collector.config import Config  # noqa: E402
from collector.specs.registry import Registry  # noqa: E402
from collector.submit.submitter import Submitter  # noqa: E402

SECRET = "bench-secret-key-that-is-32-bytes-long"


def collector(url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_REDIS_URL=url, COLLECTOR_SECRET_KEY=SECRET, COLLECTOR_LOG_LEVEL="WARNING",
               COLLECTOR_SHUTDOWN_GRACE_S="1", COLLECTOR_SUBMITS_PER_MINUTE="0")
    return subprocess.Popen([sys.executable, "-m", "collector", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pool(url: str, size: int, *extra: str) -> subprocess.Popen[bytes]:
    return collector(url, "worker", "-n", str(size), *extra)


def post(base: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(base + "/execution/run", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def up(base: str) -> bool:
    try:
        return post(base, {})[0] == 422
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait(predicate, timeout_s: float = 60.0, interval_s: float = 0.002):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError("gave up waiting")


def field(client: redis.Redis, job_id: str, name: str) -> str:
    return (client.hget(f"collector:job:{job_id}", name) or b"").decode()


def high_behind_low(url: str, submitter: Submitter, client: redis.Redis, *, lows: int, highs: int
                    ) -> tuple[list[float], int]:
    """Seconds from each high submit's answer to its start; how many low jobs still waited after the last."""
    for _ in range(lows):
        submitter.submit({"platform_id": "demo", "settings": {"rows": 1, "delay_s": 0.2}, "priority": "low"})
    proc = pool(url, 2)
    waits = []
    try:
        wait(lambda: client.scard("rq:workers") >= 2)
        wait(lambda: client.llen("rq:queue:collector:low") <= lows - 4)  # both children busy with low jobs
        for _ in range(highs):
            job_id = submitter.submit({"platform_id": "demo", "settings": {"rows": 1}, "priority": "high"})["job_id"]
            answered = time.time()
            started = wait(lambda: field(client, job_id, "started_at"))  # noqa: B023
            waits.append(dt.datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() - answered)
            time.sleep(0.3)  # let the children go back to the low backlog
        return waits, int(client.llen("rq:queue:collector:low"))
    finally:
        proc.terminate()
        proc.wait(30)


def drain(url: str, submitter: Submitter, client: redis.Redis, jobs: int) -> float:
    client.flushall()
    lanes = ("high", "normal", "low")
    for n in range(jobs):
        submitter.submit({"platform_id": "demo", "settings": {"rows": 1}, "priority": lanes[n % 3]})
    start = time.perf_counter()
    proc = pool(url, 2, "--burst")
    proc.wait(300)
    elapsed = time.perf_counter() - start
    done = sum(1 for key in client.scan_iter("collector:job:*", count=1000)
               if key.count(b":") == 2 and client.hget(key, "status") == b"finished")
    return done / elapsed


def concurrent_posts(base: str, body: dict, threads: int) -> list[tuple[int, dict, float]]:
    """`threads` POSTs of `body` released at once: each answer's status, body and seconds."""
    barrier = threading.Barrier(threads)
    answers: list[tuple[int, dict, float]] = []

    def send() -> None:
        barrier.wait()
        begun = time.perf_counter()
        status, answer = post(base, body)
        answers.append((status, answer, time.perf_counter() - begun))

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def one_key(url: str, client: redis.Redis, *, threads: int, rounds: int) -> list[dict[str, object]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = collector(url, "serve", "--port", str(port))
    results = []
    try:
        wait(lambda: up(base), timeout_s=30, interval_s=0.1)
        for n in range(rounds):
            client.flushall()
            body = {"platform_id": "demo", "settings": {"rows": 1}, "idempotency_key": f"order-{n}"}
            answers = concurrent_posts(base, body, threads)
            statuses = [status for status, _, _ in answers]
            results.append({
                "jobs": int(client.zcard("collector:jobs")),
                "ids": len({answer.get("job_id", "?") for _, answer, _ in answers}),
                "202": statuses.count(202), "200": statuses.count(200),
                "other": len(statuses) - statuses.count(202) - statuses.count(200),
                "slowest_ms": max(seconds for _, _, seconds in answers) * 1000,
                "others": [(status, answer) for status, answer, _ in answers if status not in (200, 202)],
            })
    finally:
        server.terminate()
        server.wait(30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lows", type=int, default=1000)
    parser.add_argument("--highs", type=int, default=5)
    parser.add_argument("--drain-jobs", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        config = Config(redis_url=server.url, secret_key=SECRET, submits_per_minute=0)
        submitter = Submitter(connection=client, config=config, registry=Registry.discover("platforms"))
        waits, left = high_behind_low(server.url, submitter, client, lows=args.lows, highs=args.highs)
        print(f"high behind {args.lows} low: start {', '.join(f'{w:.3f}' for w in waits)} s after submit "
              f"(median {statistics.median(waits):.3f}, max {max(waits):.3f}; target < 1 s: "
              f"{'met' if max(waits) < 1 else 'NOT met'}); {left} low jobs still queued")
        print(f"drain, {args.drain_jobs} no-op jobs over 3 lanes, pool of 2: "
              f"{drain(server.url, submitter, client, args.drain_jobs):.0f} jobs/s")
        for n, result in enumerate(one_key(server.url, client, threads=args.threads, rounds=args.rounds), 1):
            print(f"one key, {args.threads} concurrent POSTs, round {n}: {result['jobs']} job(s), {result['ids']} "
                  f"distinct id(s) answered, {result['202']} x 202, {result['200']} x 200, {result['other']} other; "
                  f"slowest answer {result['slowest_ms']:.0f} ms (target 1 job: "
                  f"{'met' if result['jobs'] == 1 and result['ids'] == 1 else 'NOT met'})"
                  + (f"; other answers: {result['others']}" if result["others"] else ""))
        client.close()


if __name__ == "__main__":
    main()
