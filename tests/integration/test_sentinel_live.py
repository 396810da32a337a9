"""Redis through Sentinel, with real processes on loopback: a primary, a replica and three sentinels; the primary is
killed (-9) while jobs are submitted and run, and the API and a worker pool follow the promoted replica without a
restart: with COLLECTOR_REDIS_MIN_REPLICAS=1 every acknowledged job finishes and nothing is left stranded, even
when the replica lags behind as the primary dies (the submits it missed were answered 503, not 202)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from collector.app import create_app
from collector.config import Config
from collector.store.connection import connect_to
from tests.conftest import PoolProcess, ServedApp, service_missing, wait_for
from tests.integration.reliability_kit import close, make_package, with_package
from tests.integration.sentinel_cluster import MASTER, SentinelCluster, redis_server_binary, submit_through_failover

JOB = {"platform_id": "sleeper", "settings": {"seconds": 0.2}}
LAG_BYTES = 32 << 20  # the replica this far behind when the primary dies: more than its socket buffers hold
LAGGING = 3           # submits made while it lags


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    binary = redis_server_binary()
    if binary is None:
        service_missing("no redis-server on PATH to run a primary, a replica and sentinels")
    workdir = tmp_path / "cluster"
    workdir.mkdir()
    started = SentinelCluster(workdir, binary=binary).start()
    yield started
    started.stop()


@pytest.fixture
def sentinel_config(config: Config, cluster: SentinelCluster) -> Config:
    return with_package(dataclasses.replace(
        config, redis_url=None, redis_sentinels=cluster.sentinel_list, redis_master=MASTER, redis_min_replicas=1,
        redis_min_replicas_wait_s=1.0, sweep_interval_s=2.0, reap_interval_s=0.5, retry_backoff_s=0.2,
    ))


def sentinel_env(config: Config) -> dict[str, str]:
    return {
        "COLLECTOR_REDIS_SENTINELS": config.redis_sentinels or "", "COLLECTOR_REDIS_MASTER": config.redis_master,
        "COLLECTOR_REDIS_MIN_REPLICAS": str(config.redis_min_replicas),
        "COLLECTOR_SWEEP_INTERVAL_S": str(config.sweep_interval_s),
        "COLLECTOR_REAP_INTERVAL_S": str(config.reap_interval_s),
        "COLLECTOR_RETRY_BACKOFF_S": str(config.retry_backoff_s),
    }


@pytest.mark.parametrize("lag_bytes", [0, LAG_BYTES], ids=["replica-in-step", "replica-behind"])
def test_api_and_pool_follow_a_failover_and_every_acknowledged_job_finishes(
    sentinel_config: Config, cluster: SentinelCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    lag_bytes: int,
) -> None:
    make_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    client = connect_to(sentinel_config)
    pool = PoolProcess(sentinel_config, 2, tmp_path / "pool.log", PYTHONPATH=str(tmp_path),
                       **sentinel_env(sentinel_config))
    served = ServedApp(create_app(sentinel_config, reaper=True))
    try:
        wait_for(lambda: client.scard("rq:workers") >= 2, what="the pool's 2 workers to register through Sentinel")
        first_primary = cluster.primary_port()

        run = submit_through_failover(
            cluster, lambda: served.request("POST", "/execution/run", JOB),
            lambda job_id: served.request("GET", f"/execution/get?job_id={job_id}"), lag_bytes=lag_bytes,
            lagging=LAGGING,
        )

        assert cluster.primary_port() != first_primary, "the sentinels promoted no replica"
        assert pool.process.poll() is None, f"the pool exited during the failover:\n{pool.output()[-3000:]}"
        after = [a for a in run.answers if a.at_s > run.promoted_after_s and a.status == 202]
        assert after, f"the API acknowledged no job on the new primary: {run.answers[-5:]}"
        assert run.count(503) > 0, "the kill was not seen: no submit answered 503"
        if lag_bytes:  # what the replica did not get in time was refused, not acknowledged and then lost
            lagging = [a for a in run.answers if a.lagging]
            assert [(a.status, a.error) for a in lagging] == [(503, "not_replicated")] * LAGGING, lagging
        assert run.lost == [], f"acknowledged jobs not finished: {[(j, run.ended.get(j)) for j in run.lost]}"
        pool_name = f"{socket.gethostname()}.{pool.process.pid}"
        workers = {view(served, a.job_id)["worker"] for a in after}
        assert all(w.startswith(pool_name) for w in workers), (pool_name, workers)  # the same pool, not restarted

        wait_for(lambda: nothing_open(client), timeout_s=30, what="no job left queued or started")
        status, workers = served.request("GET", "/rq/0/data/workers.json")  # the dashboard reads the new primary
        assert status == 200 and len(workers["workers"]) == 2, workers
        assert pool.stop() == 0  # idle children stop at once: none hangs on a BLMOVE broken off by SIGTERM
        assert "still busy after the grace period" not in pool.output(), pool.output()[-3000:]
    finally:
        close(served)
        pool.stop()
        client.close()


def view(served: ServedApp, job_id: str | None) -> dict[str, Any]:
    status, body = served.request("GET", f"/execution/get?job_id={job_id}")
    assert status == 200, body
    return body


def nothing_open(client: redis.Redis) -> bool:
    """No job record queued or started, the queue empty and no job in RQ's started registry."""
    statuses = [client.hget(key, "status") for key in client.scan_iter("collector:job:*")
                if client.type(key) == b"hash"]
    stranded = [s for s in statuses if s in (b"queued", b"started")]
    return not stranded and client.llen("rq:queue:collector") == 0 and client.zcard("rq:wip:collector") == 0
