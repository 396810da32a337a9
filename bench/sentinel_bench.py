"""Redis failover through Sentinel: run `python bench/sentinel_bench.py [--runs N]`.

On loopback: a redis-server primary, its replicas (AOF on) and three sentinels (down-after 2 s), the API served in this
process and a `collector worker -n 2` pool, both configured with the sentinels. Jobs (`demo`, one row) are
submitted one after another; after 15 are acknowledged the primary is killed with SIGKILL and restarted once a
replica is promoted (the sentinels make it a replica); submits go on until 15 more are acknowledged. In the
"replicas behind" scenarios the replicas are stopped and 32 MB written to the primary just before the kill (a
replica lagging under load), and 4 jobs submitted meanwhile. Reported per scenario (COLLECTOR_REDIS_MIN_REPLICAS,
the number of replicas, the lag):
  promoted   seconds from the kill to a replica answering as primary
  503 s      seconds from the first 503 after the kill to the last one
  503s       answers 503: `service_unavailable` (no primary) / `not_replicated` (too few replicas in time)
  acked      jobs answered 202
  lost       jobs answered 202 that did not finish (record gone or never ended within 60 s)
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.app import create_app  # noqa: E402
from collector.config import Config  # noqa: E402
from collector.store.connection import connect_to  # noqa: E402
from tests.conftest import ServedApp  # noqa: E402
from tests.integration.sentinel_cluster import (  # noqa: E402
    MASTER,
    FailoverRun,
    SentinelCluster,
    redis_server_binary,
    submit_through_failover,
)

SECRET = "bench-secret-key-of-at-least-32-bytes"
JOB = {"platform_id": "demo", "settings": {"rows": 1}}
LAG_BYTES = 32 << 20
# (COLLECTOR_REDIS_MIN_REPLICAS, replicas, bytes the replicas lag behind when the primary dies)
SCENARIOS = ((0, 1, 0), (1, 1, 0), (1, 2, 0), (0, 1, LAG_BYTES), (1, 1, LAG_BYTES))


def scenario(min_replicas: int, replicas: int, lag_bytes: int) -> FailoverRun:
    binary = redis_server_binary()
    if binary is None:
        sys.exit("no redis-server on PATH")
    with tempfile.TemporaryDirectory() as workdir:
        cluster = SentinelCluster(Path(workdir), binary=binary, replicas=replicas).start()
        settings = {"REDIS_SENTINELS": cluster.sentinel_list, "REDIS_MASTER": MASTER, "SECRET_KEY": SECRET,
                    "REDIS_MIN_REPLICAS": str(min_replicas), "SWEEP_INTERVAL_S": "2", "REAP_INTERVAL_S": "0.5",
                    "RETRY_BACKOFF_S": "0.2", "LOG_LEVEL": "ERROR", "SHUTDOWN_GRACE_S": "2",
                    "DATA_DIR": str(Path(workdir) / "data"), "SUBMITS_PER_MINUTE": "0"}
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        env.update({f"COLLECTOR_{name}": value for name, value in settings.items()})
        pool = subprocess.Popen([sys.executable, "-m", "collector", "worker", "-n", "2"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        config = Config.from_env(env)
        served = ServedApp(create_app(config, reaper=True))
        client = connect_to(config)
        try:
            SentinelCluster.wait(lambda: client.scard("rq:workers") >= 2, "the pool's workers")
            return submit_through_failover(
                cluster, lambda: served.request("POST", "/execution/run", JOB),
                lambda job_id: served.request("GET", f"/execution/get?job_id={job_id}"), lag_bytes=lag_bytes,
            )
        finally:
            served.close()
            served.server.app.extensions["collector_reaper"].stop()
            pool.terminate()
            pool.wait(10)
            client.close()
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    print("| MIN_REPLICAS | replicas | replicas behind | promoted (s) | 503 s | 503 unavailable / not_replicated "
          "| acked | lost |")
    print("|---|---|---|---|---|---|---|---|")
    for _ in range(args.runs):
        for min_replicas, replicas, lag_bytes in SCENARIOS:
            started = time.monotonic()
            run = scenario(min_replicas, replicas, lag_bytes)
            behind = f"{lag_bytes >> 20} MB" if lag_bytes else "no"
            print(f"| {min_replicas} | {replicas} | {behind} | {run.promoted_after_s:.1f} | {run.unavailable_s:.1f} | "
                  f"{run.count(503, 'service_unavailable')} / {run.count(503, 'not_replicated')} | "
                  f"{len(run.acknowledged)} | {len(run.lost)} |", flush=True)
            print(f"<!-- {time.monotonic() - started:.0f} s -->", file=sys.stderr)


if __name__ == "__main__":
    main()
