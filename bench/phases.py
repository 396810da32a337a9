"""The measurements: drain rate, end to end over HTTP, API latency under load, the cost of ctx.progress()."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench import procs as P
from collector.config import Config
from collector.specs.registry import Registry
from collector.submit.submitter import Submitter

FINISHED = "finished|demo"  # the collector metrics hash field counting finished demo jobs


def config_for(url: str) -> Config:
    return Config(redis_url=url, secret_key=P.SECRET_KEY)


def submit_demo(url: str, count: int, settings: dict[str, Any]) -> None:
    client = redis.Redis.from_url(url)
    submitter = Submitter(connection=client, config=config_for(url), registry=Registry.discover("platforms"))
    for _ in range(count):
        submitter.submit({"platform_id": "demo", "settings": settings})
    client.close()


def drain_collector(url: str, count: int, settings: dict[str, Any]) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushall()
    submit_demo(url, count, settings)
    procs = P.Procs("drain-collector")
    try:
        P.collector_pool(procs, url)
        steady, total = P.drain_window(client, "rq:queue:collector", count, 300)
        P.wait_until(lambda: int(client.hget("collector:metrics", FINISHED) or 0) == count, 60, "all finished")
    finally:
        procs.stop()
        client.close()
    return {"rate": 0.8 * count / steady, "total_s": total}


def drain_rq(url: str, count: int, func: str, worker_class: str) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushall()
    queue = Queue("bench", connection=client, serializer=JSONSerializer)
    datas = [Queue.prepare_data(func) for _ in range(count)]
    for start in range(0, count, 500):
        queue.enqueue_many(datas[start:start + 500])
    procs = P.Procs(f"drain-rq-{worker_class.rsplit('.', 1)[-1]}")
    try:
        P.rq_workers(procs, url, "bench", worker_class)
        steady, total = P.drain_window(client, "rq:queue:bench", count, 600)
        procs.wait_exit(120)  # burst workers exit once every job has ended
        done = client.zcard("rq:finished:bench")
        if done != count:
            raise RuntimeError(f"RQ finished {done} of {count} jobs")
    finally:
        procs.stop()
        client.close()
    return {"rate": 0.8 * count / steady, "total_s": total}


def drain_celery(url: str, count: int, task: str) -> dict[str, float]:
    from bench.celery_app import app

    client = redis.Redis.from_url(url)
    client.flushall()
    app.conf.broker_url = url
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task(task, producer=producer)
    procs = P.Procs("drain-celery")
    try:
        P.celery_worker(procs, url)
        steady, total = P.drain_window(client, "bench", count, 600)
    finally:
        procs.stop(60)  # warm shutdown: the tasks it prefetched run first
    client.close()
    return {"rate": 0.8 * count / steady, "total_s": total}


class Load:
    """Threads with keep-alive HTTP connections, each making its share of `count` requests."""

    def __init__(self, port: int, threads: int = 8) -> None:
        self.port, self.threads = port, threads
        self.latencies: dict[str, list[float]] = {}
        self.errors = 0
        self._lock = threading.Lock()

    def run(self, count: int, step: Any) -> float:
        """Run `step(conn, record)` `count` times over the threads; the seconds it took."""
        def worker(n: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            for _ in range(n):
                step(conn, self._record)
            conn.close()

        shares = [count // self.threads + (1 if i < count % self.threads else 0) for i in range(self.threads)]
        pool = [threading.Thread(target=worker, args=(n,)) for n in shares]
        started = time.monotonic()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.monotonic() - started

    def _record(self, name: str, conn: http.client.HTTPConnection, method: str, path: str,
                body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        started = time.perf_counter()
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        elapsed = time.perf_counter() - started
        with self._lock:
            self.latencies.setdefault(name, []).append(elapsed)
            if resp.status >= 400:
                self.errors += 1
        return json.loads(payload)

    def percentiles(self, name: str) -> tuple[float, float]:
        values = sorted(self.latencies[name])
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return cuts[49] * 1000, cuts[98] * 1000


def end_to_end_collector(url: str, count: int, port: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.flushall()
    procs = P.Procs("e2e-collector")
    spec = {"platform_id": "demo", "settings": {"rows": 1}}
    try:
        P.gunicorn(procs, url, "collector.app:create_app()", port)
        P.collector_pool(procs, url)
        P.wait_until(lambda: client.scard("rq:workers") >= 2, 30, "2 workers")
        load = Load(port)
        started = time.monotonic()
        load.run(count, lambda conn, rec: rec("run", conn, "POST", "/execution/run", spec))
        ended = P.wait_until(lambda: int(client.hget("collector:metrics", FINISHED) or 0) >= count, 300,
                             "all finished", interval_s=0.01)
        rate = count / (ended - started)
        # Latency under load: submit and read back, with the workers draining what is submitted.
        latency = Load(port)

        def submit_and_get(conn: http.client.HTTPConnection, rec: Any) -> None:
            job = rec("run", conn, "POST", "/execution/run", spec)
            rec("get", conn, "GET", f"/execution/get?job_id={job['job_id']}")

        latency.run(count, submit_and_get)
        if load.errors or latency.errors:
            raise RuntimeError(f"{load.errors + latency.errors} requests failed; see {P.LOGS}")
        return {"rate": rate, "run": latency.percentiles("run"), "get": latency.percentiles("get")}
    finally:
        procs.stop()
        client.close()


def end_to_end_bare(url: str, count: int, port: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.flushall()
    procs = P.Procs("e2e-bare")
    try:
        P.gunicorn(procs, url, "bench.bare_app:create_app()", port)
        for _ in range(2):  # not burst: they must wait for jobs still being submitted
            procs.start([str(P.BIN / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "-S",
                         "rq.serializers.JSONSerializer", "-u", url, "bare"], P.env_for(url))
        P.wait_until(lambda: client.scard("rq:workers") >= 2, 30, "2 workers")
        load = Load(port)
        started = time.monotonic()
        load.run(count, lambda conn, rec: rec("run", conn, "POST", "/run", {}))
        ended = P.wait_until(lambda: client.zcard("rq:finished:bare") >= count, 300, "all finished",
                             interval_s=0.01)
        if load.errors:
            raise RuntimeError(f"{load.errors} requests failed; see {P.LOGS}")
        return {"rate": count / (ended - started), "run": load.percentiles("run")}
    finally:
        procs.stop()
        client.close()


def progress_cost(url: str, calls: int = 1_000_000, sustain_s: float = 3.0) -> dict[str, float]:
    """1M ctx.progress() calls against a no-op method of the same shape, and the Redis writes they made."""
    from collector.run.context import RunContext
    from collector.store.records import JobStore

    client = redis.Redis.from_url(url)
    client.flushall()
    config = config_for(url)
    ctx = RunContext(job_id="bench", platform_id="demo", attempt=1, store=JobStore(client, config),
                     interval_s=config.progress_interval_s)

    class Nothing:
        def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
            pass

    baseline, target = Nothing(), ctx
    started = time.perf_counter()
    for n in range(calls):
        baseline.progress(n, calls)
    empty = time.perf_counter() - started
    before = _hset_calls(client)
    started = time.perf_counter()
    for n in range(calls):
        target.progress(n, calls)
    spent = time.perf_counter() - started
    writes = _hset_calls(client) - before
    # The same calls nonstop for a few seconds: the write rate a long tight loop settles at.
    before, calls_made = _hset_calls(client), 0
    started = time.perf_counter()
    while time.perf_counter() - started < sustain_s:
        for n in range(10_000):
            target.progress(n, calls)
        calls_made += 10_000
    sustained = time.perf_counter() - started
    sustained_writes = _hset_calls(client) - before
    client.close()
    return {"added_s": spent - empty, "total_s": spent, "writes": writes, "writes_per_s": writes / spent,
            "sustained_s": sustained, "sustained_calls": calls_made,
            "sustained_writes_per_s": sustained_writes / sustained}


def _hset_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_hset", {}).get("calls", 0))
