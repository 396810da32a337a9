"""Fencing with real pools: a frozen supervisor does not get its running job run twice, and a whole pool frozen
past the dead-pool threshold comes back to find its job recovered elsewhere, writes nothing and stops."""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.reliability_kit import PACKAGE, close, events, make_package, submit, view, with_package

STAMPER = '''
"""Works for `seconds`: each step appends its process id and the time to a file, then reports progress."""
import os
import time

from collector.platform import Platform


class Stamper(Platform):
    """Writes `<pid> <unix time>` lines to `path` every 50 ms while it runs; returns its process id."""

    def __init__(self, path: str, seconds: float = 10.0) -> None:
        self.path, self.seconds = path, seconds

    def _run(self, ctx):
        worked = 0.0
        n = 0
        while worked < self.seconds:  # time worked, so a frozen copy still has work left when it thaws
            n += 1
            with open(self.path, "a") as stamps:
                stamps.write(f"{os.getpid()} {time.time()}\\n")
            time.sleep(0.05)
            worked += 0.05
            ctx.progress(n, None, f"step {n}")
        return {"pid": os.getpid()}
'''

# Small thresholds: a pool silent for 2 s (and confirmed missing on a second look) is declared dead.
FAST = {"pool_heartbeat_ttl_s": 2, "reap_interval_s": 0.5}
DEAD_AFTER_S = 2 + 3 + 0.5  # the TTL, the reaper's confirmation (CONFIRM_S) and one reap interval


class Pools:
    def __init__(self, config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess]) -> None:
        self.config, self.tmp_path, self._start_pool = config, tmp_path, start_pool
        self.served = ServedApp(create_app(config))
        self.frozen: list[int] = []

    def pool(self) -> PoolProcess:
        import dataclasses

        env = {f"COLLECTOR_{name.upper()}": str(value) for name, value in FAST.items()}
        return self._start_pool(1, dataclasses.replace(self.config, **FAST), PYTHONPATH=str(self.tmp_path), **env)

    def freeze(self, *pids: int) -> None:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            self.frozen.append(pid)

    def thaw(self) -> None:
        while self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.frozen.pop(), signal.SIGCONT)


@pytest.fixture
def pools(config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Pools]:
    package = make_package(tmp_path)
    (package / "stamper.py").write_text(textwrap.dedent(STAMPER))
    assert package.name == PACKAGE
    monkeypatch.syspath_prepend(str(tmp_path))
    kit = Pools(with_package(config), tmp_path, start_pool)
    yield kit
    kit.thaw()
    close(kit.served)


def child_pid(redis_client: redis.Redis, worker: str) -> int:
    return int(redis_client.hget(f"rq:worker:{worker}", "pid") or 0)


def kinds(served: ServedApp, job_id: str) -> list[str]:
    return [e["type"] for e in events(served, job_id)]


def stamps(path: Path) -> list[tuple[int, float]]:
    lines = path.read_text().split() if path.exists() else []
    return [(int(pid), float(at)) for pid, at in zip(lines[::2], lines[1::2], strict=True)]


def test_a_frozen_supervisor_whose_child_still_runs_the_job_is_not_declared_dead(
    pools: Pools, redis_client: redis.Redis, tmp_path: Path
) -> None:
    a = pools.pool()
    path = tmp_path / "stamps-a"
    job_id = submit(pools.served, "stamper", {"path": str(path), "seconds": 10})
    started = wait_for(lambda: (r := view(pools.served, job_id))["status"] == "started" and r, timeout_s=30,
                       what="the job to start on pool A")
    pools.pool()  # pool B, idle, reaping
    pools.freeze(a.process.pid)
    deadline = time.monotonic() + DEAD_AFTER_S + 3
    while time.monotonic() < deadline:
        record = view(pools.served, job_id)
        assert record["attempt"] == 1 and record["worker"] == started["worker"], "not recovered while A's child runs"
        time.sleep(0.5)
    pools.thaw()
    done = wait_for(lambda: (r := view(pools.served, job_id))["status"] in ("finished", "failed") and r,
                    timeout_s=60, what="the job to end")
    assert done["status"] == "finished" and done["attempt"] == 1 and done["worker"] == started["worker"]
    found = kinds(pools.served, job_id)
    assert found.count("started") == 1 and found.count("finished") == 1 and "worker_lost" not in found
    assert {pid for pid, _ in stamps(path)} == {done["result"]["pid"]}, "one copy ran"


def test_a_whole_pool_frozen_past_the_threshold_loses_its_job_and_its_stale_copy_writes_nothing(
    pools: Pools, redis_client: redis.Redis, tmp_path: Path
) -> None:
    a = pools.pool()
    path = tmp_path / "stamps"
    job_id = submit(pools.served, "stamper", {"path": str(path), "seconds": 8})
    first = wait_for(lambda: (r := view(pools.served, job_id))["status"] == "started" and r, timeout_s=30,
                     what="the job to start on pool A")
    stale_pid = child_pid(redis_client, first["worker"])
    assert stale_pid
    wait_for(lambda: len(stamps(path)) >= 3, what="the first copy to work")
    pools.pool()  # pool B
    pools.freeze(a.process.pid, stale_pid)  # thawed in reverse: the child first, then its supervisor
    second = wait_for(lambda: (r := view(pools.served, job_id))["status"] == "started" and r["attempt"] == 2 and r,
                      timeout_s=60, what="the job to be recovered and started on pool B")
    assert second["worker"] != first["worker"]
    wait_for(lambda: any(pid != stale_pid for pid, _ in stamps(path)), what="the second copy to work")
    thawed_at = time.time()
    pools.thaw()
    done = wait_for(lambda: (r := view(pools.served, job_id))["status"] in ("finished", "failed", "stopped") and r,
                    timeout_s=60, what="the job to end")
    assert done["status"] == "finished" and done["attempt"] == 2 and done["worker"] == second["worker"]
    assert done["result"]["pid"] != stale_pid, "the end written is the second copy's"
    found = kinds(pools.served, job_id)
    assert found.count("finished") == 1 and "stopped" not in found and "failed" not in found
    assert found.count("started") == 2 and found.index("worker_lost") < len(found) - 1 - found[::-1].index("started")
    wait_for(lambda: "lost its lease" in a.output(), what="the stale copy to log that it stopped")
    stale_after = [at for pid, at in stamps(path) if pid == stale_pid and at > thawed_at]
    overlap = (max(stale_after) - thawed_at) if stale_after else 0.0
    assert overlap < 3.0, f"the stale copy ran on {overlap:.1f} s after it thawed"
    # The stale copy wrote nothing on the record afterwards: its steps went on counting from where it froze.
    assert done["progress"]["message"] != "" and done["progress"]["done"] >= 8 / 0.05 - 1


def test_a_job_taken_before_a_freeze_is_not_started_once_another_attempt_holds_it(
    config: Config, redis_client: redis.Redis
) -> None:
    """Worker A took a job with the end of its last one, then froze past its pool's death; the sweep put the job back
    and worker B started it. Thawed, A's loop comes to the job it took: its start is refused, nothing runs, nothing
    of the record or RQ's side of the job changes, and A's claims are left empty. (RQ's real worker loop, in
    process, on a real redis-server: the freeze itself is `test_a_whole_pool_frozen_…`'s.)"""
    from rq.serializers import JSONSerializer

    from collector.pool.children import CollectorWorker
    from collector.run.runner import Runtime, install
    from collector.specs.registry import Registry
    from collector.store.claiming_queue import claiming_queue
    from collector.store.records import JobStore, connect
    from collector.store.rq import RQ, claims_key
    from collector.submit.submitter import Submitter

    registry = Registry.discover("platforms")
    job_id = Submitter(connection=redis_client, config=config, registry=registry).submit(
        {"platform_id": "demo", "settings": {"rows": 1}})["job_id"]
    queue_key = RQ(redis_client, config).queue_key
    queue_class = claiming_queue("A")
    taker = queue_class._taker(queue_key)
    lane, taken = taker.take_once(redis_client)  # A takes it (with its last job's end)
    assert taken.decode() == job_id
    store = JobStore(redis_client, config)
    key = store.keys.job(job_id)
    # ... froze; the sweep put the job back, and B started it: its lease, its worker.
    redis_client.lrem(claims_key(queue_key, "A"), 0, job_id)
    redis_client.hset(key, mapping={"status": "started", "lease": "lease-of-b", "worker": "B", "attempt": 1})
    record, rq_side = redis_client.hgetall(key), redis_client.hgetall(f"rq:job:{job_id}")
    seen = redis_client.lrange(store.keys.events(job_id), 0, -1)
    redis_client.rpush(claims_key(queue_key, "A"), job_id)  # what A's claims held when it froze

    connection = connect(config.redis_url or "", blocking=True)
    runtime = Runtime(config, connection, registry, worker_name="A")
    install(runtime)
    queue_class._prefetched = (lane, taken, taker.job_hash)  # what A's loop holds from before the freeze
    worker = CollectorWorker([config.queue_name], connection=connection, name="A", serializer=JSONSerializer,
                             queue_class=queue_class)
    worker.runtime = runtime
    worker.work(burst=True)  # thawed: it comes to the job it took, then finds the queue empty
    assert runtime.outcome is not None and runtime.outcome.status == "superseded"
    assert redis_client.hgetall(key) == record, "the record is B's"
    assert redis_client.lrange(store.keys.events(job_id), 0, -1) == seen, "no `started` of A's"
    assert redis_client.hgetall(f"rq:job:{job_id}") == rq_side, "RQ's side of the job is B's"
    assert redis_client.llen(claims_key(queue_key, "A")) == 0 and redis_client.zcard("rq:wip:collector") == 0
    connection.close()
