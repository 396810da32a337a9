"""The platform author's commands behind `collector run`, `collector check` and `collector new-platform`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from collector.config import Config
from collector.errors import SpecSourceError, ValidationError

EXIT_FAILED = 1      # the job (or the check) ran and failed
EXIT_USAGE = 2       # the spec or the command line is wrong; nothing ran


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_validation(exc: ValidationError) -> int:
    say(f"collector: {exc.message}")
    for path, messages in exc.details.items():
        for message in messages if isinstance(messages, list) else [messages]:
            say(f"  {path}: {message}")
    return EXIT_USAGE


def resolve_body(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    """The spec the command runs: SPEC.json or `--from-job`, with `--set` overrides applied."""
    from collector.devkit.specsource import apply_sets, fetch_job_spec, read_spec_file

    if bool(args.spec) == bool(args.from_job):
        raise SpecSourceError("give either SPEC.json or --from-job ID (not both, not neither)")
    if args.from_job:
        url = args.url or config.url
        say(f"fetching the spec of job {args.from_job} from {url} (secrets are not given out)")
        body = fetch_job_spec(args.from_job, url=url, token=config.api_token)
    else:
        body = read_spec_file(args.spec)
    return apply_sets(body, args.set or [])


def prepared(args: argparse.Namespace, config: Config) -> tuple[Any, dict[str, Any]] | int:
    """A local runtime and a checked spec body, or the exit code when the spec cannot be used."""
    from collector.devkit.local import check_spec, local_runtime
    from collector.devkit.specsource import missing_secrets

    body = resolve_body(args, config)
    runtime = local_runtime(config)
    try:
        spec = check_spec(body, runtime.registry)
    except ValidationError as exc:
        return print_validation(exc)
    missing = missing_secrets(spec)
    if missing:
        say("collector: these secret settings are masked (\"***\") and must be given again: " + ", ".join(missing))
        say("  give them with " + " ".join(f"--set {name}=..." for name in missing))
        return EXIT_USAGE
    return runtime, body


def run(args: argparse.Namespace, config: Config) -> int:
    """`collector run`: the job in this process, with a progress bar, its logs, its datasets and its result."""
    from collector.cli.display import ProgressBar, console_logging
    from collector.devkit.local import run_local

    if args.from_job and not getattr(args, "copy", False):
        return run_claimed(args, config)
    ready = prepared(args, config)
    if isinstance(ready, int):
        return ready
    runtime, body = ready
    bar = ProgressBar(sys.stderr)
    say(f"running {body['platform_id']} in this process"
        + (f" (Redis: {config.redis_setting})" if config.redis_configured else " (in-process fake Redis)"))

    def show(progress: dict[str, Any]) -> None:
        bar.update({"status": "started", "progress": progress})

    started = time.monotonic()
    with console_logging(bar):
        outcome = run_local(body, runtime, on_progress=show)
    bar.close()
    return report(args, outcome, time.monotonic() - started)


def run_claimed(args: argparse.Namespace, config: Config) -> int:
    """`collector run --from-job ID`: claim the queued job from the service's Redis and run it here as that job."""
    from collector.cli.display import ProgressBar, console_logging
    from collector.devkit.local import local_runtime
    from collector.devkit.local import run_claimed as claimed
    from collector.errors import ConflictError, NotFoundError

    if args.spec or args.set:
        raise SpecSourceError("a claimed job runs as it was submitted: give --from-job ID alone, or add --copy to "
                              "run a copy of its spec with SPEC.json or --set changes")
    runtime = local_runtime(config)
    bar = ProgressBar(sys.stderr)

    def show(progress: dict[str, Any]) -> None:
        bar.update({"status": "started", "progress": progress})

    if config.redis_configured:  # else the claim refuses, saying so
        say(f"claiming job {args.from_job} (Redis: {config.redis_setting}) to run it in this process as that job")
    signal.signal(signal.SIGTERM, stop_claimed)  # the job then ends failed, as on Ctrl-C, not left `started`
    started = time.monotonic()
    try:
        with console_logging(bar):
            outcome = claimed(args.from_job, runtime, on_progress=show, key_given=bool(config.secret_key))
    except (ConflictError, NotFoundError) as exc:
        bar.close()
        say(f"collector: {exc.message}")
        return EXIT_USAGE
    bar.close()
    if outcome.status not in ("finished", "failed", "stopped", "canceled"):
        say(f"job {outcome.job_id} is {outcome.status} now: the service's workers take it from here")
        return EXIT_FAILED
    return report(args, outcome, time.monotonic() - started)


def stop_claimed(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signal.Signals(signum).name} while it ran")


def report(args: argparse.Namespace, outcome: Any, elapsed: float) -> int:
    """What a local run prints: its datasets (written with --out), then the result or the error."""
    from collector.devkit.local import write_datasets

    for name, rows in outcome.datasets.items():
        kept = outcome.kept.get(name) or {}
        cut = (f" (the first of {kept['total_rows']}: COLLECTOR_DATASET_MAX_ROWS/_BYTES cut the rest)"
               if kept.get("truncated") else "")
        say(f"dataset {name}: {len(rows)} rows{cut}")
    if args.out and outcome.datasets:
        for path in write_datasets(outcome.datasets, Path(args.out)).values():
            say(f"  wrote {path}")
    elif outcome.datasets:
        say("  (give --out DIR to write them as JSON lines)")
    if outcome.ok:
        say(f"job {outcome.job_id} finished in {elapsed:.2f} s; result:")
        print(json.dumps(outcome.result, indent=2, default=str), flush=True)
        return 0
    error = outcome.error or {}
    if error.get("traceback"):
        say(error["traceback"].rstrip())
    say(f"job {outcome.job_id} failed after {elapsed:.2f} s: {error.get('type')}: {error.get('message')}")
    if args.pdb and outcome.exception is not None:
        import pdb

        say("entering the debugger at the exception (q quits)")
        pdb.post_mortem(outcome.exception.__traceback__)
    return EXIT_FAILED


def check(args: argparse.Namespace, config: Config) -> int:
    """`collector check`: the platform's and its storage's connection checks, in this process."""
    from collector.devkit.local import check_spec
    from collector.submit.checks import check_spec_locally

    ready = prepared(args, config)
    if isinstance(ready, int):
        return ready
    runtime, body = ready
    answer = check_spec_locally(check_spec(body, runtime.registry))
    for entry in answer["checks"]:
        mark = {True: "ok", False: "FAILED", None: "-"}[entry["ok"]]
        say(f"  {mark:6} {entry['name']}: {entry['message']}")
    print(json.dumps(answer, indent=2), flush=True)
    return 0 if answer["ok"] else EXIT_FAILED


def new_platform(args: argparse.Namespace, config: Config) -> int:
    """`collector new-platform NAME`: the platform file and its test file, from the templates."""
    from collector.devkit.scaffold import new_platform as scaffold

    written = scaffold(
        args.name, package=args.package or config.platforms_package,
        where=Path(args.dir) if args.dir else None, tests=Path(args.tests_dir) if args.tests_dir else None,
        examples=Path(args.examples_dir) if args.examples_dir else None,
    )
    for path in written:
        print(f"wrote {path}")
    spec = next((p for p in written if p.suffix == ".json"), "SPEC.json")
    tests = [str(p) for p in written if p.name.startswith("test_")]
    if tests:
        say(f"next: fill in the TODOs in {written[0]}, then `collector run {spec}` and run the tests ({tests[0]})")
    else:
        say(f"next: fill in the TODOs in {written[0]}, then `collector run {spec}`; no test file was written (no "
            "tests folder beside the platforms folder): give one with --tests-dir to get one")
    return 0
