"""Redis round trips and commands per job: collector's worker next to RQ's SimpleWorker, counted in-process.

Three counts per job: round trips (one per send: a command, a pipeline or a transaction), commands sent (each
command the worker packs: a MULTI/EXEC transaction counts as all its commands, MULTI and EXEC included; a Lua
script as the one EVALSHA it is), and commands executed (Redis's commandstats: a script's inner calls counted
one by one, EVALSHA included, MULTI and EXEC too)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.connection import AbstractConnection
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.phases import config_for, submit_demo
from collector.store import scripts

LOGGING_LEVEL = "WARNING"  # what the in-process workers log at (bench/profile_job.py sets INFO, as the pool runs)


Counts = tuple[int, int, int]  # round trips, commands sent, commands Redis executed


def _counting(run: Callable[[], Any], client: redis.Redis) -> Counts:
    """(round trips, commands sent, commands executed) while `run()` runs: one send per command or per pipeline is
    one round trip; every command packed is one sent."""
    sends, packed = [0], [0]
    cls = AbstractConnection
    originals = cls.send_packed_command, cls.send_command, cls.pack_commands

    def send_packed(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sends[0] += 1
        originals[0](self, command, check_health)

    def send_one(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        packed[0] += 1  # a command on its own
        originals[1](self, *args, **kwargs)

    def pack_many(self: AbstractConnection, commands: Any) -> Any:
        commands = list(commands)
        packed[0] += len(commands)  # a pipeline's commands, MULTI and EXEC included
        return originals[2](self, commands)

    def script_sent(connection: AbstractConnection, words: Any) -> None:
        packed[0] += 1  # one of collector's scripts, packed by hiredis and sent as it is
        send_script(connection, words)

    send_script = scripts._send
    before = _commands(client)
    cls.send_packed_command, cls.send_command, cls.pack_commands = send_packed, send_one, pack_many  # type: ignore
    scripts._send = script_sent  # type: ignore[assignment]
    try:
        run()
    finally:
        cls.send_packed_command, cls.send_command, cls.pack_commands = originals  # type: ignore
        scripts._send = send_script  # type: ignore[assignment]
    return sends[0], packed[0], _commands(client) - before


def _commands(client: redis.Redis) -> int:
    return sum(int(v.get("calls", 0)) for v in client.info("commandstats").values())


def collector_worker(url: str, jobs: int) -> Counts:
    from collector.pool.children import CollectorWorker
    from collector.run.runner import Runtime, install
    from collector.specs.registry import Registry
    from collector.store.claiming_queue import claiming_queue
    from collector.store.records import connect

    client = redis.Redis.from_url(url)
    client.flushall()
    submit_demo(url, jobs, {"rows": 1})
    config = config_for(url)
    connection = connect(url, blocking=True)
    runtime = Runtime(config, connection, Registry.discover("platforms"), worker_name="bench")
    install(runtime)
    name = f"bench-{jobs}"
    worker = CollectorWorker(["collector"], connection=connection, name=name, serializer=JSONSerializer,
                             queue_class=claiming_queue(name))  # as the pool makes its children
    worker.runtime = runtime
    counted = _counting(lambda: worker.work(burst=True, logging_level=LOGGING_LEVEL), client)
    client.close()
    return counted


def rq_simple_worker(url: str, jobs: int) -> Counts:
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


def per_job(url: str, jobs: int = 200) -> dict[str, tuple[float, float, float]]:
    """Round trips, commands sent and commands executed per job, the worker's start-up and shutdown (a run with
    no job) taken out."""
    out = {}
    for name, measure in (("collector", collector_worker), ("rq_simple", rq_simple_worker)):
        empty = measure(url, 0)
        full = measure(url, jobs)
        trips, sent, executed = ((f - e) / jobs for f, e in zip(full, empty, strict=True))
        out[name] = (trips, sent, executed)
    return out


if __name__ == "__main__":
    from collector.cli.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        for system, (trips, sent, executed) in per_job(server.url).items():
            print(f"{system}: {trips:.1f} round trips, {sent:.1f} commands sent, {executed:.1f} commands executed "
                  "per job")
