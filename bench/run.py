"""The benchmark: `python bench/run.py [--runs 3]` measures everything in one go on one private Redis.

Drain rate (collector's pool vs RQ SimpleWorker, RQ's forking Worker and Celery prefork, 2 workers each),
I/O-bound jobs (a GET that takes 100 ms: `collector worker -n 32` vs Celery prefork -c 32, with the pools' PSS;
bench/io_bench.py), end to end over HTTP (collector vs a bare Flask + RQ endpoint, both under gunicorn), API
latency under load, the cost of 1M ctx.progress() calls, and Redis round trips per job. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import io_bench, phases, roundtrips
from collector.cli.embedded import EmbeddedRedis, free_port

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MARKER = "<!-- analysis: kept when run.py rewrites the runs above -->"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def one_run(url: str, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """Everything once; the no-op drains and end to end in `args.rounds` interleaved rounds.

    Other work on a shared machine comes and goes, so systems are measured in turn, round after
    round, and each ratio is the median of the ratios within a round (measured minutes apart at most).
    """
    n, n_fork, n_sleep = args.jobs, args.fork_jobs, args.sleep_jobs
    drains: dict[str, list[float]] = {"c": [], "s": [], "f": [], "y": []}
    for round_ in range(1, args.rounds + 1):
        say(f"drain round {round_}/{args.rounds}: collector {n}, RQ SimpleWorker {n}, RQ Worker {n_fork}, "
            f"Celery {n} no-op jobs")
        drains["c"].append(phases.drain_collector(url, n, {"rows": 1})["rate"])
        drains["s"].append(phases.drain_rq(url, n, "bench.tasks.noop", "rq.worker.SimpleWorker")["rate"])
        drains["f"].append(phases.drain_rq(url, n_fork, "bench.tasks.noop", "rq.worker.Worker")["rate"])
        drains["y"].append(phases.drain_celery(url, n, "bench.noop")["rate"])
    r: dict[str, Any] = {"drain": drains}
    say(f"drain, 10 ms jobs: {n_sleep} each")
    r["sleep"] = {
        "c": phases.drain_collector(url, n_sleep, {"rows": 1, "delay_s": 0.01})["rate"],
        "s": phases.drain_rq(url, n_sleep, "bench.tasks.sleep10", "rq.worker.SimpleWorker")["rate"],
        "f": phases.drain_rq(url, min(n_sleep, n_fork), "bench.tasks.sleep10", "rq.worker.Worker")["rate"],
        "y": phases.drain_celery(url, n_sleep, "bench.sleep10")["rate"],
    }
    say(f"I/O-bound: {args.io_jobs} jobs of a 100 ms GET each, 32 workers each")
    r["io"] = io_bench.io_phase(url, args.io_jobs)
    r["e2e_c"], r["e2e_b"] = [], []
    for round_ in range(1, args.rounds + 1):
        say(f"end to end round {round_}/{args.rounds}: {args.e2e_jobs} jobs each over HTTP, then latency under load")
        r["e2e_c"].append(phases.end_to_end_collector(url, args.e2e_jobs, free_port()))
        r["e2e_b"].append(phases.end_to_end_bare(url, args.e2e_jobs, free_port()))
    say("1M ctx.progress() calls")
    r["progress"] = phases.progress_cost(url)
    say("round trips per job")
    r["trips"] = roundtrips.per_job(url)
    return r


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """Per-round ratios' medians: collector vs each system measured next to it."""
    d = r["drain"]
    return {
        "simple": _median([c / s for c, s in zip(d["c"], d["s"], strict=True)]),
        "fork": _median([c / f for c, f in zip(d["c"], d["f"], strict=True)]),
        "celery": _median([c / y for c, y in zip(d["c"], d["y"], strict=True)]),
        "celery_sleep": r["sleep"]["c"] / r["sleep"]["y"],
        "io": _median([c["rate"] / y["rate"] for c, y in zip(r["io"]["c"], r["io"]["y"], strict=True)]),
        "e2e": _median([c["rate"] / b["rate"] for c, b in zip(r["e2e_c"], r["e2e_b"], strict=True)]),
    }


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    q = ratios(r)
    p = r["progress"]
    return [
        ("drain >= 1.0x RQ SimpleWorker", f"{q['simple']:.2f}x", q["simple"] >= 1.0),
        ("drain >= 5x RQ forking Worker", f"{q['fork']:.2f}x", q["fork"] >= 5.0),
        ("drain >= 1.0x Celery prefork, no-op", f"{q['celery']:.2f}x", q["celery"] >= 1.0),
        ("drain >= 1.0x Celery prefork, 10 ms jobs", f"{q['celery_sleep']:.2f}x", q["celery_sleep"] >= 1.0),
        ("I/O-bound (32 workers each) >= 1.0x Celery prefork", f"{q['io']:.2f}x", q["io"] >= 1.0),
        ("end to end >= 0.8x Flask + RQ", f"{q['e2e']:.2f}x", q["e2e"] >= 0.8),
        ("1M progress calls add < 1 s", f"{p['added_s']:.3f} s", p["added_s"] < 1.0),
        ("< 20 Redis writes per second of run time", f"{p['writes_per_s']:.1f}/s; nonstop "
         f"{p['sustained_writes_per_s']:.1f}/s", max(p["writes_per_s"], p["sustained_writes_per_s"]) < 20),
    ]


def table(r: dict[str, Any]) -> str:
    def rates(values: list[float]) -> str:
        return f"{_median(values):,.0f} ({', '.join(f'{v:,.0f}' for v in values)})"

    d, sl = r["drain"], r["sleep"]
    c_rates = [x["rate"] for x in r["e2e_c"]]
    b_rates = [x["rate"] for x in r["e2e_b"]]

    def lat(rounds: list[dict[str, Any]], key: str) -> str:
        return f"{_median([x[key][0] for x in rounds]):.1f} / {_median([x[key][1] for x in rounds]):.1f}"

    lines = [
        "| drain rate, jobs/s (2 workers each; 10-90 % of the queue) | no-op: median (each round) "
        "| sleeps 10 ms |",
        "|---|---:|---:|",
        f"| collector pool (`collector worker -n 2`, demo platform) | {rates(d['c'])} | {sl['c']:,.0f} |",
        f"| RQ SimpleWorker x2 | {rates(d['s'])} | {sl['s']:,.0f} |",
        f"| RQ Worker (fork per job) x2 | {rates(d['f'])} | {sl['f']:,.0f} |",
        f"| Celery prefork, concurrency 2 | {rates(d['y'])} | {sl['y']:,.0f} |",
        "",
        "| I/O-bound: each job a GET answered after 100 ms (127.0.0.1) | jobs/s (10-90 % of jobs ended) "
        "| pool PSS, MB |",
        "|---|---:|---:|",
        *[f"| {name} | {x['rate']:,.0f} | {x['pss_mb']:,.0f} |" for name, key in (
            ("collector (`collector worker -n 32`, http_json platform)", "c"), ("Celery prefork, -c 32", "y"))
          for x in r["io"][key]],
        "",
        "| end to end over HTTP (gunicorn gthread 2x4, 8 client threads) | jobs/s: median (each round) "
        "| POST p50 / p99 ms | GET p50 / p99 ms |",
        "|---|---:|---:|---:|",
        f"| collector: POST /execution/run -> finished | {rates(c_rates)} | {lat(r['e2e_c'], 'run')} "
        f"| {lat(r['e2e_c'], 'get')} |",
        f"| bare Flask endpoint + RQ SimpleWorker x2 | {rates(b_rates)} | {lat(r['e2e_b'], 'run')} | - |",
        "",
        f"ctx.progress() x1,000,000: {r['progress']['total_s']:.3f} s, {r['progress']['added_s']:.3f} s more than "
        f"an empty method; {r['progress']['writes']} Redis writes ({r['progress']['writes_per_s']:.1f}/s). "
        f"Called nonstop for {r['progress']['sustained_s']:.1f} s ({r['progress']['sustained_calls']:,} calls): "
        f"{r['progress']['sustained_writes_per_s']:.1f} writes/s.",
        "",
        "Redis per job (worker start-up/shutdown excluded; sent: a MULTI/EXEC counts as all its commands, a Lua "
        "script as one; executed: Redis's commandstats, a script's inner calls included): collector {:.1f} round "
        "trips, {:.1f} commands sent, {:.1f} executed; RQ SimpleWorker {:.1f} round trips, {:.1f} commands sent, "
        "{:.1f} executed.".format(
            *r["trips"]["collector"], *r["trips"]["rq_simple"]),
        "",
        "| target (ratios: median of the per-round ratios) | measured | met |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in verdicts(r)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="how many times to run everything (all are reported)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the no-op drains and end to end")
    parser.add_argument("--jobs", type=int, default=2000, help="no-op jobs per drain measurement")
    parser.add_argument("--fork-jobs", type=int, default=300, help="jobs for RQ's forking worker (slow)")
    parser.add_argument("--sleep-jobs", type=int, default=400, help="10 ms jobs per drain measurement")
    parser.add_argument("--io-jobs", type=int, default=2000, help="I/O-bound jobs per system")
    parser.add_argument("--e2e-jobs", type=int, default=1000, help="jobs submitted over HTTP per system")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    args = parser.parse_args()
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    runs = []
    with EmbeddedRedis() as server:
        for number in range(1, args.runs + 1):
            def say(text: str, number: int = number) -> None:
                print(f"[run {number}/{args.runs}] {text}", flush=True)

            result = one_run(server.url, args, say)
            runs.append(result)
            print(table(result), flush=True)
    head = [
        "# Benchmark results",
        "",
        f"Made by `{command.strip()}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, one private redis-server for everything. The machine is shared, so "
        "the figures are noisy: every run is reported. Ratios compare systems within the same run.",
        "",
    ]
    body = [f"## Run {i}\n\n{table(r)}\n" for i, r in enumerate(runs, 1)]
    # The hand-written analysis below the marker survives a new run.
    kept = args.out.read_text().partition(MARKER)[2] if args.out.exists() else ""
    args.out.write_text("\n".join(head + body) + (f"\n{MARKER}{kept}" if kept else ""))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
