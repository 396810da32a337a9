"""Concurrency caps under real pools: run `python bench/caps_bench.py`.

40 jobs of a platform with `CONCURRENCY = 2`, each sleeping `--seconds`, submitted at once to two pools of 4
children each on a private redis-server. Reports the most jobs seen running at once (from the start and end
times each job returns), the wall time from the first submit to the last end against the ideal
(jobs x seconds / 2), and how often jobs were parked. Fails (exit 1) when more than 2 ran at once or the wall time
is over 1.2x the ideal.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import SECRET_KEY  # noqa: E402
from collector.cli.embedded import EmbeddedRedis  # noqa: E402
from collector.config import Config  # noqa: E402
from collector.specs.registry import Registry  # noqa: E402
from collector.submit.submitter import Submitter  # noqa: E402
from tests.integration.test_caps_live import CAPPED  # noqa: E402  the platform the live test runs

PACKAGE = "capsbenchplatforms"


def package(where: Path) -> None:
    target = where / PACKAGE
    target.mkdir()
    (target / "__init__.py").write_text("")
    (target / "capped.py").write_text(textwrap.dedent(CAPPED))


def pool(url: str, size: int, pythonpath: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_REDIS_URL=url, COLLECTOR_SECRET_KEY=SECRET_KEY, COLLECTOR_LOG_LEVEL="WARNING",
               COLLECTOR_SHUTDOWN_GRACE_S="1", COLLECTOR_PLATFORMS_PACKAGE=PACKAGE, PYTHONPATH=str(pythonpath))
    return subprocess.Popen([sys.executable, "-m", "collector", "worker", "-n", str(size)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def run(url: str, *, jobs: int, seconds: float, pythonpath: Path) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushall()
    pools = [pool(url, 4, pythonpath), pool(url, 4, pythonpath)]
    try:
        deadline = time.monotonic() + 60
        while client.scard("rq:workers") < 8:
            if time.monotonic() > deadline:
                raise TimeoutError("the pools did not start")
            time.sleep(0.05)
        config = Config(redis_url=url, secret_key=SECRET_KEY, platforms_package=PACKAGE)
        submitter = Submitter(connection=client, config=config, registry=Registry.discover(PACKAGE))
        began = time.time()
        ids = [submitter.submit({"platform_id": "capped", "settings": {"seconds": seconds}})["job_id"]
               for _ in range(jobs)]
        deadline = time.monotonic() + jobs * seconds * 3 + 30
        while any(client.hget(f"collector:job:{j}", "status") != b"finished" for j in ids):
            if time.monotonic() > deadline:
                raise TimeoutError("the jobs did not all finish")
            time.sleep(0.05)
        results = [client.hget(f"collector:job:{j}", "result") for j in ids]
        spans = [(float(r["start"]), float(r["end"])) for r in map(_json, results)]
        events = [client.lrange(f"collector:job:{j}:events:list", 0, -1) for j in ids]
        parks = sum(b'"type":"deferred"' in e for es in events for e in es)
        wall = max(end for _, end in spans) - began
        ideal = jobs * seconds / 2
        # A slot's hand-off: from the end of a job to the start of the one that took its slot (the k-th start
        # after the first two took the slot of the k-th end).
        starts, ends = sorted(s for s, _ in spans), sorted(e for _, e in spans)
        gaps = sorted(start - end for start, end in zip(starts[2:], ends, strict=False))
        return {"peak": most_at_once(spans), "wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal,
                "first_start_s": starts[0] - began, "gap_median_ms": 1000 * gaps[len(gaps) // 2],
                "gap_max_ms": 1000 * gaps[-1],
                "parks": parks, "parked_jobs": sum(any(b'"type":"deferred"' in e for e in es) for es in events)}
    finally:
        for proc in pools:
            proc.terminate()
        for proc in pools:
            proc.wait(30)
        client.close()


def _json(raw: bytes | None) -> dict[str, float]:
    import json

    return json.loads(raw or b"{}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=0.5, help="how long each job sleeps")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    server = EmbeddedRedis()
    server.start()
    failed = False
    try:
        with tempfile.TemporaryDirectory() as where:
            package(Path(where))
            sys.path.insert(0, where)
            for n in range(args.runs):
                got = run(server.url, jobs=args.jobs, seconds=args.seconds, pythonpath=Path(where))
                ok = got["peak"] <= 2 and got["ratio"] <= 1.2
                failed |= not ok
                print(f"run {n + 1}: {args.jobs} jobs x {args.seconds:g} s, CONCURRENCY = 2, two pools of 4: "
                      f"most at once {got['peak']}, wall {got['wall_s']:.2f} s vs ideal {got['ideal_s']:.2f} s "
                      f"= {got['ratio']:.3f}x, first start {got['first_start_s']:.2f} s after the first submit, "
                      f"hand-off median {got['gap_median_ms']:.0f} ms max {got['gap_max_ms']:.0f} ms, "
                      f"{got['parks']:.0f} parks of {got['parked_jobs']:.0f} jobs "
                      f"{'ok' if ok else 'FAILED'}")
    finally:
        server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
