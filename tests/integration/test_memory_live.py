"""Redis memory of finished small jobs, drained by a real `collector worker`: every key a job leaves fits 4 kB."""

from __future__ import annotations

import subprocess
import sys

import redis

from collector.config import Config
from collector.specs.registry import Registry
from collector.store.memory import job_footprint
from collector.submit.submitter import Submitter
from tests.conftest import ROOT, worker_env

LIMIT_BYTES = 4096


def test_a_finished_one_row_job_leaves_at_most_4_kb_in_redis(config: Config, redis_client: redis.Redis) -> None:
    submitter = Submitter(connection=redis_client, config=config, registry=Registry.discover("platforms"))
    ids = [submitter.submit({"platform_id": "demo", "settings": {"rows": 1}})["job_id"] for _ in range(5)]
    done = subprocess.run([sys.executable, "-m", "collector", "worker", "-n", "1", "--burst"], env=worker_env(config),
                          cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    for job_id in ids:
        assert redis_client.hget(f"collector:job:{job_id}", "status") == b"finished"
        footprint = job_footprint(redis_client, job_id)
        assert f"collector:job:{job_id}" in footprint and f"rq:job:{job_id}" in footprint, footprint
        assert not any(key.startswith("rq:results:") for key in footprint), "the result is kept once: in the record"
        assert sum(footprint.values()) <= LIMIT_BYTES, footprint
        assert len(redis_client.lrange(f"collector:job:{job_id}:events:list", 0, -1)) == 3  # queued, started, ended
