"""Redis round trips and commands per job: collector's worker next to RQ's SimpleWorker, counted in-process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.connection import AbstractConnection
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from bench.phases import config_for, submit_demo

LOGGING_LEVEL = "WARNING"  # what the in-process workers log at (bench/profile_job.py sets INFO, as the pool runs)


def _counting(run: Callable[[], Any], client: redis.Redis) -> tuple[int, int]:
    """(round trips, commands) while `run()` runs: one send per command or per pipeline is one round trip."""
    sends = [0]
    original = AbstractConnection.send_packed_command

    def send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sends[0] += 1
        original(self, command, check_health)

    before = _commands(client)
    AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        run()
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
    return sends[0], _commands(client) - before


def _commands(client: redis.Redis) -> int:
    return sum(int(v.get("calls", 0)) for v in client.info("commandstats").values())


def collector_worker(url: str, jobs: int) -> tuple[int, int]:
    from collector.pool.children import CollectorWorker
    from collector.run.runner import Runtime, install
    from collector.specs.registry import Registry
    from collector.store.records import connect

    client = redis.Redis.from_url(url)
    client.flushall()
    submit_demo(url, jobs, {"rows": 1})
    config = config_for(url)
    connection = connect(url, blocking=True)
    install(Runtime(config, connection, Registry.discover("platforms"), worker_name="bench"))
    worker = CollectorWorker(["collector"], connection=connection, name=f"bench-{jobs}", serializer=JSONSerializer)
    counted = _counting(lambda: worker.work(burst=True, logging_level=LOGGING_LEVEL), client)
    client.close()
    return counted


def rq_simple_worker(url: str, jobs: int) -> tuple[int, int]:
    client = redis.Redis.from_url(url)
    client.flushall()
    queue = Queue("bench", connection=client, serializer=JSONSerializer)
    if jobs:
        queue.enqueue_many([Queue.prepare_data("bench.tasks.noop") for _ in range(jobs)])
    worker = SimpleWorker(["bench"], connection=redis.Redis.from_url(url), name=f"rq-{jobs}",
                          serializer=JSONSerializer)
    counted = _counting(lambda: worker.work(burst=True, logging_level=LOGGING_LEVEL), client)
    client.close()
    return counted


def per_job(url: str, jobs: int = 200) -> dict[str, tuple[float, float]]:
    """Round trips and commands per job, the worker's start-up and shutdown (a run with no job) taken out."""
    out = {}
    for name, measure in (("collector", collector_worker), ("rq_simple", rq_simple_worker)):
        empty_trips, empty_cmds = measure(url, 0)
        trips, cmds = measure(url, jobs)
        out[name] = ((trips - empty_trips) / jobs, (cmds - empty_cmds) / jobs)
    return out
