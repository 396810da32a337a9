"""Redis memory per finished small job: run `python bench/memory_per_job.py [--jobs N]`.

On a private redis-server: submits N one-row demo jobs, drains them with `collector worker -n 1 --burst`, then
reports the `used_memory` delta per job and `MEMORY USAGE` of each key one finished job leaves (its record, its
events stream, its datasets, RQ's job hash and results stream), plus its share of the shared sorted sets (the
jobs index, RQ's finished registry). The target: at most 4 kB per finished small job.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import SECRET_KEY  # noqa: E402
from collector.cli.embedded import EmbeddedRedis  # noqa: E402
from collector.config import Config  # noqa: E402
from collector.specs.registry import Registry  # noqa: E402
from collector.store.memory import job_footprint  # noqa: E402
from collector.submit.submitter import Submitter  # noqa: E402

TARGET_BYTES = 4096


def drain(url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_REDIS_URL=url, COLLECTOR_SECRET_KEY=SECRET_KEY, COLLECTOR_LOG_LEVEL="WARNING")
    subprocess.run([sys.executable, "-m", "collector", "worker", "-n", "1", "--burst"], env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=1800)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(jobs: int) -> dict[str, Any]:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        config = Config(redis_url=server.url, secret_key=SECRET_KEY)
        submitter = Submitter(connection=client, config=config, registry=Registry.discover("platforms"))
        # One job first, so the structures every job shares (queue, registries, metrics hash, index) exist.
        submitter.submit({"platform_id": "demo", "settings": {"rows": 1}})
        drain(server.url)
        before = used_memory(client)
        ids = [submitter.submit({"platform_id": "demo", "settings": {"rows": 1}})["job_id"] for _ in range(jobs)]
        started = time.monotonic()
        drain(server.url)
        took = time.monotonic() - started
        after = used_memory(client)
        statuses = {client.hget(f"collector:job:{i}", "status") for i in ids}
        assert statuses == {b"finished"}, statuses
        sample = ids[len(ids) // 2]
        per_key = job_footprint(client, sample)
        shared = {
            name: (client.memory_usage(key) or 0) / max(1, client.zcard(key))
            for name, key in (("jobs index entry", "collector:jobs"),
                              ("RQ finished registry entry", f"rq:finished:{config.queue_name}"))
            if client.exists(key)
        }
        client.close()
    return {"jobs": jobs, "delta_per_job": (after - before) / jobs, "per_key": per_key, "shared": shared,
            "drain_s": took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    result = measure(args.jobs)
    keys_total = sum(result["per_key"].values())
    print(f"{result['jobs']} one-row demo jobs, drained by one worker in {result['drain_s']:.1f} s")
    print(f"used_memory delta per finished job: {result['delta_per_job']:.0f} B")
    print(f"MEMORY USAGE of one finished job's keys: {keys_total} B (target <= {TARGET_BYTES} B: "
          f"{'met' if keys_total <= TARGET_BYTES else 'NOT met'})")
    for key, size in sorted(result["per_key"].items(), key=lambda kv: -kv[1]):
        print(f"  {size:6d} B  {key}")
    for name, size in result["shared"].items():
        print(f"  {size:6.0f} B  {name} (its sorted set's size / entries)")


if __name__ == "__main__":
    main()
