"""`collector run`: a job in the foreground, as a worker runs it, with progress, logs, datasets and exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from collector.app import create_app
from collector.config import Config
from tests.conftest import ROOT, PoolProcess, ServedApp, wait_for

KIT_PLATFORMS = "tests.devkit_platforms"


def collector(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m collector ARGS` with no COLLECTOR_* setting but those given."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "collector", *args], input=stdin, capture_output=True, text=True,
        env=environ, cwd=ROOT, timeout=60,
    )


def spec_file(tmp_path: Path, body: dict) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_a_job_that_succeeds_prints_progress_result_and_writes_datasets(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, {"platform_id": "demo", "settings": {"rows": 40, "delay_s": 0.005}})
    done = collector("run", spec, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"rows": 40}
    assert "100.0%  40/40" in done.stderr and "/s" in done.stderr and "row 40 of 40" in done.stderr
    assert "in-process fake Redis" in done.stderr
    original = (tmp_path / "out" / "original.jsonl").read_text().splitlines()
    processed = [json.loads(line) for line in (tmp_path / "out" / "processed.jsonl").read_text().splitlines()]
    assert len(original) == 40 and json.loads(original[2]) == {"n": 3, "value": 9}
    assert processed[3] == {"n": 4, "value": 16, "even": True}


def test_a_job_that_fails_exits_1_with_its_error_and_traceback(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, {"platform_id": "demo", "settings": {"rows": 10, "fail_at": 4}})
    done = collector("run", spec)
    assert done.returncode == 1
    assert "failed after" in done.stderr and "FatalError: demo failure at row 4 (fail_at=4)" in done.stderr
    assert "Traceback" in done.stderr and "platforms/demo.py" in done.stderr
    assert done.stdout == ""


def test_pdb_stops_at_the_original_exception(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, {"platform_id": "demo", "settings": {"rows": 10, "fail_at": 6}})
    done = collector("run", spec, "--pdb", stdin="p n\np type(self).__name__\nq\n")
    assert done.returncode == 1
    # The debugger sits in Demo._run, where the FatalError was raised, not in the runner's masked re-raise.
    assert "demo.py" in done.stdout and "(Pdb) 6" in done.stdout and "'Demo'" in done.stdout


def test_a_bad_spec_exits_2_naming_every_field(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, {"platform_id": "demo", "settings": {"rows": "many", "colour": "red"}})
    done = collector("run", spec)
    assert done.returncode == 2
    assert "settings.rows: Not a valid integer." in done.stderr and "settings.colour: Unknown field." in done.stderr
    (tmp_path / "bad.json").write_text("{not json")
    done = collector("run", str(tmp_path / "bad.json"))
    assert done.returncode == 2 and "is not valid JSON" in done.stderr
    done = collector("run")
    assert done.returncode == 2 and "give either SPEC.json or --from-job" in done.stderr


def test_a_broken_platform_file_is_named_with_its_error() -> None:
    done = collector("run", "-", stdin='{"platform_id": "broken"}', COLLECTOR_PLATFORMS_PACKAGE=KIT_PLATFORMS)
    assert done.returncode == 2
    assert "failed to load: ImportError: this file is broken on purpose" in done.stderr


def test_secrets_are_set_on_the_command_line_and_masked_in_the_logs() -> None:
    body = '{"platform_id": "vault", "settings": {"username": "ada"}}'
    done = collector("run", "-", "--set", "password=open-sesame", "--set", "rows=5", stdin=body,
                     COLLECTOR_PLATFORMS_PACKAGE=KIT_PLATFORMS)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"rows": 5}
    assert "logging in as ada with password ***" in done.stderr and "open-sesame" not in done.stderr


def test_with_a_redis_url_the_record_is_written_there(redis_url: str, redis_client: redis.Redis) -> None:
    done = collector("run", "-", stdin='{"platform_id": "demo", "settings": {"rows": 3}}',
                     COLLECTOR_REDIS_URL=redis_url)
    assert done.returncode == 0, done.stderr
    keys = [k.decode() for k in redis_client.keys("collector:job:local-*") if k.count(b":") == 2]
    assert len(keys) == 1
    assert redis_client.llen(f"{keys[0]}:events:list") > 0, "the local run's events are kept too"
    assert redis_client.hget(keys[0], "status") == b"finished"
    assert redis_client.llen("rq:queue:collector") == 0  # run locally, never queued for a worker


def test_a_failed_production_job_is_replayed_with_its_secrets_given_again(
    config: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess]
) -> None:
    kit_config = dataclasses.replace(config, platforms_package=KIT_PLATFORMS)
    served = ServedApp(create_app(kit_config))
    try:
        start_pool(1, kit_config)
        status, job = served.request("POST", "/execution/run", {
            "platform_id": "vault", "settings": {"username": "ada", "password": "stale-password", "rows": 4}})
        assert status == 202
        failed = wait_for(lambda: (r := served.request("GET", f"/execution/get?job_id={job['job_id']}")[1])
                          ["status"] == "failed" and r, what="the production job to fail")
        assert failed["error"]["message"] == "login refused for ada with password ***"
        env = {"COLLECTOR_PLATFORMS_PACKAGE": KIT_PLATFORMS, "COLLECTOR_URL": served.url}
        done = collector("run", "--from-job", job["job_id"], "--copy", **env)
        assert done.returncode == 2
        assert "password" in done.stderr and "--set password=..." in done.stderr
        # The same failure, reproduced here (where --pdb could step into it) ...
        done = collector("run", "--from-job", job["job_id"], "--copy", "--set", "password=stale-password", **env)
        assert done.returncode == 1 and "FatalError: login refused for ada with password ***" in done.stderr
        # ... and the job, fixed, with the settings it had (rows=4).
        done = collector("run", "--from-job", job["job_id"], "--copy", "--url", served.url,
                         "--set", "password=open-sesame", "--out", str(tmp_path),
                         COLLECTOR_PLATFORMS_PACKAGE=KIT_PLATFORMS)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"rows": 4}
        assert len((tmp_path / "original.jsonl").read_text().splitlines()) == 4
        done = collector("run", "--from-job", "no-such-job", "--copy", **env)
        assert done.returncode == 2 and "answered 404" in done.stderr
    finally:
        served.close()
    done = collector("run", "--from-job", "x", "--copy", "--url", served.url)
    assert done.returncode == 2 and "cannot reach the service" in done.stderr


def test_from_job_claims_a_queued_job_and_runs_it_here_as_that_job(
    config: Config, redis_url: str, redis_client: redis.Redis, data_dir: Path
) -> None:
    kit_config = dataclasses.replace(config, platforms_package=KIT_PLATFORMS)
    served = ServedApp(create_app(kit_config))
    try:  # no pool: the job waits in the queue until this process claims it
        status, job = served.request("POST", "/execution/run", {
            "platform_id": "vault", "settings": {"username": "ada", "password": "open-sesame", "rows": 4}})
        assert status == 202
        job_id = job["job_id"]
        env = {"COLLECTOR_PLATFORMS_PACKAGE": KIT_PLATFORMS, "COLLECTOR_REDIS_URL": redis_url,
               "COLLECTOR_DATA_DIR": str(data_dir)}
        done = collector("run", "--from-job", job_id, **env)  # no key: its sealed secrets cannot be opened
        assert done.returncode == 2 and "COLLECTOR_SECRET_KEY" in done.stderr and "nothing was claimed" in done.stderr
        assert redis_client.lrange("rq:queue:collector", 0, -1) == [job_id.encode()]

        done = collector("run", "--from-job", job_id, COLLECTOR_SECRET_KEY=config.secret_key, **env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"rows": 4} and "open-sesame" not in done.stderr
        record = served.request("GET", f"/execution/get?job_id={job_id}")[1]
        assert record["status"] == "finished" and record["attempt"] == 1 and record["result"] == {"rows": 4}
        assert record["claimed_by"].startswith("local:") and record["worker"] == record["claimed_by"]
        assert record["datasets"]["original"]["rows"] == 4
        kinds = [e["type"] for e in served.request("GET", f"/execution/events?job_id={job_id}")[1]]
        assert [k for k in kinds if k != "log"] == ["queued", "claimed", "started", "finished"]
        assert redis_client.llen("rq:queue:collector") == 0, "taken off the queue: no worker runs it again"
        assert redis_client.hget(f"rq:job:{job_id}", "status") == b"finished"
        assert not redis_client.keys("collector:job:local-*"), "no copy was made"
        assert not redis_client.exists(f"collector:claimed:{job_id}"), "the claim's beat ends with its run"

        done = collector("run", "--from-job", job_id, COLLECTOR_SECRET_KEY=config.secret_key, **env)
        assert done.returncode == 2 and "cannot be claimed: it ended 'finished'" in done.stderr
        done = collector("run", "--from-job", job_id, COLLECTOR_URL=served.url)  # no Redis: it cannot be claimed
        assert done.returncode == 2 and "COLLECTOR_REDIS_URL" in done.stderr and "--copy" in done.stderr
    finally:
        served.close()


def test_a_claimed_job_stops_when_it_is_cancelled(
    config: Config, redis_url: str, redis_client: redis.Redis, data_dir: Path
) -> None:
    served = ServedApp(create_app(config))
    try:
        status, job = served.request("POST", "/execution/run", {
            "platform_id": "demo", "settings": {"rows": 100_000, "delay_s": 0.01}})
        assert status == 202
        job_id = job["job_id"]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        environ.update(COLLECTOR_REDIS_URL=redis_url, COLLECTOR_DATA_DIR=str(data_dir))
        claimed = subprocess.Popen([sys.executable, "-m", "collector", "run", "--from-job", job_id], cwd=ROOT,
                                   env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: served.request("GET", f"/execution/get?job_id={job_id}")[1]["status"] == "started",
                     timeout_s=60, what="the claimed job to start")
            first, read_at = redis_client.pttl(f"collector:claimed:{job_id}"), time.monotonic()
            assert 0 < first <= 10_000, "the claiming process beats, so the sweep leaves the job to it"

            def renewed() -> bool:
                """Longer to live than the first reading run down since: a renewal, however soon after that
                reading it came (comparing with the reading itself misses a renewal that follows it closely)."""
                left = redis_client.pttl(f"collector:claimed:{job_id}")
                return left > first - (time.monotonic() - read_at) * 1000 + 200

            wait_for(renewed, timeout_s=15, what="the beat to be renewed (left alone it only runs down)")
            status, _ = served.request("POST", f"/execution/cancel?job_id={job_id}",
                                       headers={"X-Requested-With": "XMLHttpRequest"})
            assert status == 202
            _, err = claimed.communicate(timeout=60)
        finally:
            if claimed.poll() is None:
                claimed.kill()
                claimed.communicate()  # its pipes closed too: left to the collector, a later test trips on them
        assert claimed.returncode == 1, err
        record = served.request("GET", f"/execution/get?job_id={job_id}")[1]
        assert record["status"] == "stopped" and record["error"]["type"] == "JobCancelledError"
        assert record["progress"]["done"] < 100_000
        assert not redis_client.exists(f"collector:claimed:{job_id}")

        # SIGTERM (a terminal closed, a container stopped) ends the claimed job failed, never left `started`.
        status, job = served.request("POST", "/execution/run", {
            "platform_id": "demo", "settings": {"rows": 100_000, "delay_s": 0.01}})
        job_id = job["job_id"]
        claimed = subprocess.Popen([sys.executable, "-m", "collector", "run", "--from-job", job_id], cwd=ROOT,
                                   env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: served.request("GET", f"/execution/get?job_id={job_id}")[1]["status"] == "started",
                     timeout_s=60, what="the second claimed job to start")
            claimed.terminate()
            _, err = claimed.communicate(timeout=60)
        finally:
            if claimed.poll() is None:
                claimed.kill()
                claimed.communicate()  # its pipes closed too: left to the collector, a later test trips on them
        assert claimed.returncode == 1, err
        record = served.request("GET", f"/execution/get?job_id={job_id}")[1]
        assert record["status"] == "failed" and record["error"]["type"] == "SystemExit"
        assert "stopped by signal SIGTERM" in record["error"]["message"]
    finally:
        served.close()


def test_a_claim_without_the_services_redis_refuses_before_saying_it_claims() -> None:
    done = collector("run", "--from-job", "0" * 32)
    assert done.returncode == 2 and "set COLLECTOR_REDIS_URL" in done.stderr
    assert "(Redis: " not in done.stderr, "no line names a Redis that is not set"
