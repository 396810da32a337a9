"""How many jobs one Redis primary carries: run `python bench/capacity.py [--jobs N]`.

On a private redis-server (one core: Redis runs commands on one thread):
  commands per job   a job's whole life, counted by Redis itself (INFO commandstats): the submit as the API makes
                     it, a pool child running it (demo platform, one row: every record write, event and fenced
                     write on), one GET of its record, and the reaper's share while it ran
  Redis CPU per job  the server's own CPU seconds (INFO cpu) over the same jobs
  idle pools         commands per second a pool of 8 idle children sends (heartbeats, blocking takes)
  ops/s              redis-benchmark against the same server, for the commands a job sends most, pipelined as a
                     job's commands arrive (about 9 per round trip) and one at a time
The ceiling in jobs/s is the lower of ops/s / commands per job and 1 / CPU per job; what the model makes of it is in
README's "Capacity of one Redis" and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import SECRET_KEY  # noqa: E402
from collector.app import create_app  # noqa: E402
from collector.cli.embedded import EmbeddedRedis  # noqa: E402
from collector.config import Config  # noqa: E402
from collector.specs.registry import Registry  # noqa: E402
from collector.submit.submitter import Submitter  # noqa: E402

BENCHMARKED = "set,get,incr,lpush,rpop,hset,zadd,sadd"  # the kinds of command a job sends most
PIPELINED = 9  # a job's 55 commands arrive in about 6 round trips
IDLE_S = 10.0


def worker_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_REDIS_URL=url, COLLECTOR_SECRET_KEY=SECRET_KEY, COLLECTOR_LOG_LEVEL="WARNING")
    return env


def command_calls(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys_main_thread"]) + float(info["used_cpu_user_main_thread"])


def job_life(url: str, jobs: int) -> dict[str, Any]:
    """Commands and Redis CPU per job over `jobs` one-row demo jobs: submitted, drained, each read once."""
    client = redis.Redis.from_url(url)
    config = Config(redis_url=url, secret_key=SECRET_KEY)
    submitter = Submitter(connection=client, config=config, registry=Registry.discover("platforms"))
    api = create_app(config, dashboard=False).test_client()
    submitter.submit({"platform_id": "demo", "settings": {"rows": 1}})  # the shared structures exist first
    subprocess.run([sys.executable, "-m", "collector", "worker", "-n", "1", "--burst"], env=worker_env(url),
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=600)
    idle = idle_pool(url)  # the start-up and shutdown of a pool with no job, taken out below
    before, cpu_before = command_calls(client), server_cpu(client)
    ids = [submitter.submit({"platform_id": "demo", "settings": {"rows": 1}})["job_id"] for _ in range(jobs)]
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "collector", "worker", "-n", "1", "--burst"], env=worker_env(url),
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=600)
    drained_s = time.monotonic() - started
    for job_id in ids:
        assert api.get(f"/execution/get?job_id={job_id}").json["status"] == "finished"
    after, cpu_after = command_calls(client), server_cpu(client)
    per_kind = {name: (after[name] - before.get(name, 0)) / jobs for name in after}
    per_kind.pop("info", None)  # this script's own reads of the counters
    total = sum(per_kind.values()) - idle["burst_commands"] / jobs
    client.close()
    return {"commands": total, "per_kind": {k: round(v, 2) for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1])
                                            if v >= 0.5},
            "cpu_s": (cpu_after - cpu_before) / jobs, "drained_s": drained_s, **idle}


def idle_pool(url: str) -> dict[str, float]:
    """Commands a pool sends with nothing to do: a burst run with no job (its start and stop), and a pool of 8
    children left idle for IDLE_S seconds (what each idle host costs the primary)."""
    client = redis.Redis.from_url(url)
    before = sum(command_calls(client).values())
    subprocess.run([sys.executable, "-m", "collector", "worker", "-n", "1", "--burst"], env=worker_env(url),
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=600)
    burst = sum(command_calls(client).values()) - before - 1
    pool = subprocess.Popen([sys.executable, "-m", "collector", "worker", "-n", "8"], env=worker_env(url), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(IDLE_S)  # let it start: its start-up is not what an idle pool costs
        counted_from = sum(command_calls(client).values())
        time.sleep(IDLE_S)
        idle = (sum(command_calls(client).values()) - counted_from - 1) / IDLE_S
    finally:
        pool.terminate()
        pool.wait(60)
    client.close()
    return {"burst_commands": burst, "idle_pool_commands_per_s": idle}


def ops_per_second(port: int) -> dict[str, float]:
    """redis-benchmark's requests/s per command, pipelined PIPELINED deep and not pipelined, 50 clients."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark is not on PATH (it comes with redis-server: apt-get install redis-tools)")
    out: dict[str, float] = {}
    for depth in (1, PIPELINED):
        done = subprocess.run([binary, "-p", str(port), "-q", "-n", "200000", "-c", "50", "-P", str(depth),
                               "-t", BENCHMARKED, "--csv"], capture_output=True, text=True, check=True, timeout=600)
        rates = [float(row[1]) for row in (line.replace('"', "").split(",") for line in done.stdout.splitlines())
                 if len(row) > 1 and re.fullmatch(r"[0-9.]+", row[1])]
        out[f"P{depth}"] = len(rates) / sum(1 / r for r in rates)  # harmonic mean: the mix's rate
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    logging.getLogger("collector").setLevel(logging.WARNING)  # not a line per submit
    with EmbeddedRedis() as server:
        life = job_life(server.url, args.jobs)
        ops = ops_per_second(int(server.url.rsplit(":", 1)[1].split("/")[0]))
    by_ops = {depth: rate / life["commands"] for depth, rate in ops.items()}
    by_cpu = 1 / life["cpu_s"]
    ceiling = min(by_ops[f"P{PIPELINED}"], by_cpu)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (the figures assume a quiet machine)")
    print(f"commands per job: {life['commands']:.1f} (submit, run, one GET); most sent: {json.dumps(life['per_kind'])}")
    print(f"Redis CPU per job: {life['cpu_s'] * 1e6:.0f} us -> at most {by_cpu:,.0f} jobs/s on one core")
    print(f"redis-benchmark ({BENCHMARKED}): {ops['P1']:,.0f} ops/s one at a time, "
          f"{ops[f'P{PIPELINED}']:,.0f} ops/s {PIPELINED} per round trip")
    print(f"ceiling from ops/s: {by_ops['P1']:,.0f} jobs/s (unpipelined), {by_ops[f'P{PIPELINED}']:,.0f} jobs/s "
          f"(as a job pipelines)")
    print(f"ceiling of one primary: {ceiling:,.0f} jobs/s")
    print(f"an idle pool of 8 children: {life['idle_pool_commands_per_s']:.1f} commands/s; "
          f"its start and stop: {life['burst_commands']:.0f} commands")
    print(f"1-row jobs drained by one child: {args.jobs / life['drained_s']:,.0f} jobs/s")


if __name__ == "__main__":
    main()
