"""The `collector` command: `up` (all in one), `serve` (API), `worker` (the pool), and the platform author's kit."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from collector import __version__, defaults
from collector.cli.schedulecommands import add_schedule_commands
from collector.cli.statecommands import add_state_commands
from collector.config import Config
from collector.errors import CollectorError
from collector.masking import install_log_masking

if TYPE_CHECKING:
    from collector.specs.registry import Registry

log = logging.getLogger("collector")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
        from collector.logs import setup

        install_log_masking()
        setup(config)
        return int(args.handler(args, config) or 0)
    except CollectorError as exc:
        from collector.cli import client

        if getattr(args, "json", False):  # a script reads stdout: the refusal goes there too, as JSON
            client.emit_error(exc)
        print(f"collector: {client.describe(exc)}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description="A Redis-backed job executor for data collection.")
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="API, workers and dashboard on an embedded Redis (or COLLECTOR_REDIS_URL)")
    up.add_argument("--host", default=defaults.HOST)
    up.add_argument("--port", type=int, default=defaults.PORT)
    up.add_argument("--workers", "-n", type=int, default=defaults.WORKERS, help="worker processes")
    up.set_defaults(handler=cmd_up)

    serve = sub.add_parser("serve", help="the HTTP API only (waitress, with timeouts against slow clients)")
    serve.add_argument("--host", default=defaults.HOST)
    serve.add_argument("--port", type=int, default=defaults.PORT)
    serve.set_defaults(handler=cmd_serve)

    worker = sub.add_parser("worker", help="a pool of pre-forked workers")
    worker.add_argument("-n", "--workers", type=int, default=defaults.WORKERS, help="worker processes")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.set_defaults(handler=cmd_worker)

    run = sub.add_parser("run", help="run one job in this process, as a worker would (no service needed)")
    _add_spec_arguments(run)
    run.add_argument("--out", metavar="DIR", help="write the original/processed datasets to DIR as JSON lines")
    run.add_argument("--pdb", action="store_true", help="enter the debugger at the exception when the job fails")
    run.add_argument("--copy", action="store_true",
                     help="with --from-job: run a copy of its spec (fetched over HTTP) instead of claiming the job")
    run.set_defaults(handler=cmd_run)

    check = sub.add_parser("check", help="test a spec's connection and credentials without collecting anything")
    _add_spec_arguments(check)
    check.set_defaults(handler=cmd_check)

    seal = sub.add_parser("seal", help="seal a secret read from stdin with COLLECTOR_SECRET_KEY, for the "
                                       "connections file: password = {sealed = \"...\"}")
    seal.set_defaults(handler=cmd_seal)

    new = sub.add_parser("new-platform",
                         help="write platforms/NAME.py (its tests, examples/NAME.json) from a commented template")
    new.add_argument("name", metavar="NAME", help="the platform id: a lowercase Python identifier, e.g. acme_ads")
    new.add_argument("--package", help="the platforms package (default: COLLECTOR_PLATFORMS_PACKAGE)")
    new.add_argument("--dir", help="the folder to write NAME.py in (default: the package's folder)")
    new.add_argument("--tests-dir", help="the folder for test_NAME.py (default: tests/platforms beside it, when "
                                         "there is a tests folder there)")
    new.add_argument("--examples-dir", help="the folder for NAME.json, a job spec (default: examples beside it)")
    new.set_defaults(handler=cmd_new_platform)
    add_client_commands(sub)
    add_job_commands(sub)
    add_process_commands(sub)
    return parser


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", metavar="SPEC.json",
                        help='a JSON file {"platform_id": ..., "settings": {...}}; - reads stdin')
    parser.add_argument("--from-job", metavar="ID",
                        help="`run`: claim the queued job ID from the service's Redis (COLLECTOR_REDIS_URL) and run "
                             "it here as that job; `check` (and `run --copy`): take its spec from the service")
    parser.add_argument("--url", help="the service --from-job asks (default: COLLECTOR_URL)")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="set a setting (JSON or text; dotted for nested: storage.settings.password=...)")


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from collector.cli import devcommands

    return devcommands.run(args, config)


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from collector.cli import devcommands

    return devcommands.check(args, config)


def cmd_seal(args: argparse.Namespace, config: Config) -> int:
    """Print the secret on standard input sealed with COLLECTOR_SECRET_KEY (asked for without echo on a terminal)."""
    from collector.sealing import Sealer, check_key

    if not config.secret_key:
        raise CollectorError("COLLECTOR_SECRET_KEY is not set; seal with the key the API and the workers use, "
                             "or they cannot open the value")
    check_key(config.secret_key)
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass("secret to seal (not shown): ")
    else:
        value = sys.stdin.read().removesuffix("\n").removesuffix("\r")  # `echo` adds a line end
    if not value:
        raise CollectorError("nothing to seal: give the secret on standard input, "
                             "e.g. printf %s \"$DB_PASSWORD\" | collector seal")
    print(Sealer(config.secret_key).seal(value))
    return 0


def cmd_new_platform(args: argparse.Namespace, config: Config) -> int:
    from collector.cli import devcommands

    return devcommands.new_platform(args, config)


def add_client_commands(sub: Any) -> None:
    """`submit`, `get`, `list`, `cancel`, `platforms`: talk to a running service over HTTP."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the service (default: COLLECTOR_URL or {defaults.URL})")
    common.add_argument("--json", action="store_true", help="print the service's JSON answer, for scripts")

    submit = sub.add_parser("submit", parents=[common], help="submit a job spec (JSON file, '-' for stdin)")
    submit.add_argument("spec", metavar="SPEC.json")
    submit.add_argument("--wait", action="store_true", help="show progress until the job ends; exit 0 only if finished")
    submit.add_argument("-q", "--quiet", action="store_true",
                        help="print the job id alone (the default when standard output is not a terminal)")
    submit.set_defaults(handler=cmd_submit)

    get = sub.add_parser("get", parents=[common], help="everything known about a job")
    get.add_argument("job_id", metavar="ID")
    get.add_argument("--full", action="store_true",
                     help="include the datasets' rows (indented JSON when standard output is a terminal)")
    get.set_defaults(handler=cmd_get)

    jobs = sub.add_parser("list", parents=[common], help="recent jobs, newest first")
    jobs.add_argument("--status", help="only jobs in this status (queued, started, finished, failed, ...)")
    jobs.add_argument("--platform", help="only jobs of this platform id")
    jobs.add_argument("--limit", type=int, default=defaults.LIST_LIMIT, help="jobs per page")
    jobs.add_argument("--cursor", help="the page after the one that printed this cursor")
    jobs.set_defaults(handler=cmd_list)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    cancel.add_argument("job_id", metavar="ID")
    cancel.set_defaults(handler=cmd_cancel)

    platforms = sub.add_parser("platforms", parents=[common], help="the platforms the service runs, with settings")
    platforms.set_defaults(handler=cmd_platforms)
    add_schedule_commands(sub, common)
    add_state_commands(sub, common)


def add_job_commands(sub: Any) -> None:
    """`resume`, `retry`, `events`: act on one job of a running service."""
    from collector.cli.jobcommands import add_job_commands as add

    add(sub)


def add_process_commands(sub: Any) -> None:
    """`processes`, `inbox`, `ack`, `rerun`, `finalize`: step processes and what waits for a person."""
    from collector.cli.processes import add_process_commands as add

    add(sub)


def cmd_submit(args: argparse.Namespace, config: Config) -> int:
    from collector.cli import client

    return client.cmd_submit(args, config)


def cmd_get(args: argparse.Namespace, config: Config) -> int:
    from collector.cli import client

    return client.cmd_get(args, config)


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from collector.cli import client

    return client.cmd_list(args, config)


def cmd_cancel(args: argparse.Namespace, config: Config) -> int:
    from collector.cli import client

    return client.cmd_cancel(args, config)


def cmd_platforms(args: argparse.Namespace, config: Config) -> int:
    from collector.cli import client

    return client.cmd_platforms(args, config)


def cmd_worker(args: argparse.Namespace, config: Config) -> int:
    from collector.pool.supervisor import Pool

    if not config.redis_configured:
        raise CollectorError("COLLECTOR_REDIS_URL is not set (nor COLLECTOR_REDIS_SENTINELS); the pool needs the Redis "
                             "the API queues jobs in")
    if args.workers < 1:
        raise CollectorError(f"-n {args.workers}: a pool needs at least 1 worker")
    from collector.specs.secrets import require_secret_key

    pool = Pool(config, size=args.workers, burst=args.burst)
    require_secret_key(config, pool.registry, process="worker pool")
    return pool.run()


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from collector.api.auth import served_on
    from collector.app import create_app
    from collector.cli.server import serve_until_signal

    app = create_app(config, reaper=True)
    served_on(app, args.host)
    warn_if_open(config, args.host)
    serve_until_signal(app, host=args.host, port=args.port, config=config)
    return 0


def warn_if_open(config: Config, host: str) -> str:
    """Say at start-up who can call the API; warn loudly when anyone on the network can, unauthenticated."""
    from collector.api.auth import is_loopback

    if config.api_tokens or config.api_tokens_file:
        note = ("API tokens required (COLLECTOR_API_TOKENS): every endpoint but GET /system/alive, /system/ready "
                "and /execution/callback (its link carries a job's resume token) needs one")
        log.info(note)
    elif is_loopback(host):
        note = f"open: no COLLECTOR_API_TOKENS, but {host} is loopback, so only this machine can reach the API"
        log.info(note)
    else:
        note = (f"OPEN TO THE NETWORK: listening on {host} with no COLLECTOR_API_TOKENS; anyone who reaches this "
                "address can queue jobs and use the dashboard. Set COLLECTOR_API_TOKENS or bind to 127.0.0.1")
        log.warning("!" * 20 + " " + note + " " + "!" * 20)
    return note


def cmd_up(args: argparse.Namespace, config: Config) -> int:
    """Everything on one machine: private Redis (unless configured), a worker pool and the API."""
    from collector.api.auth import served_on
    from collector.app import create_app
    from collector.cli.embedded import EmbeddedRedis
    from collector.cli.server import serve_until_signal
    from collector.sealing import check_key, new_key

    if config.secret_key:
        check_key(config.secret_key)  # before anything starts: the API and the workers would refuse it
    embedded: EmbeddedRedis | None = None
    pool: subprocess.Popen[bytes] | None = None
    env = dict(os.environ)
    try:
        if not config.redis_configured:
            embedded = EmbeddedRedis().start()
            env["COLLECTOR_REDIS_URL"] = embedded.url
            _volatile_by_design(embedded.url, Config.from_env(env))
            log.info("embedded Redis on %s (stopped with the service)", embedded.url)
        if not config.secret_key:
            env["COLLECTOR_SECRET_KEY"] = new_key()
            log.info("COLLECTOR_SECRET_KEY not set: made one for this session")
        config = Config.from_env(env)
        pool = subprocess.Popen(
            [sys.executable, "-m", "collector", "worker", "-n", str(args.workers)], env=env
        )
        app = create_app(config, reaper=True)
        served_on(app, args.host)
        access = warn_if_open(config, args.host)

        def ready(port: int) -> None:
            print(banner(f"http://{args.host}:{port}", workers=f"{args.workers} (pid {pool.pid if pool else '?'})",
                         redis=config.redis_url if embedded else f"({config.redis_setting})", access=access,
                         registry=app.extensions["collector"].registry), flush=True)

        serve_until_signal(app, host=args.host, port=args.port, config=config, on_ready=ready)
    finally:
        # The API has stopped; the workers finish (or requeue) their jobs within the grace, and Redis, in a session
        # of its own that a terminal's Ctrl-C does not reach, stops last, once they have written what they hold.
        grace = config.shutdown_grace_s
        _stopping(f"stopping: running jobs get {grace:g} s (COLLECTOR_SHUTDOWN_GRACE_S) to finish, then are "
                  "requeued; Redis stops last")
        try:
            if pool is not None:
                stop_process(pool, grace + 5)
        finally:
            if embedded is not None:
                embedded.stop()
            log.info("stopped")
    return 0


def _volatile_by_design(url: str, config: Config) -> None:
    """The embedded Redis keeps nothing on disk on purpose (the banner says so): no process warns about it."""
    from collector.store.dataloss import volatile_by_design
    from collector.store.records import Keys, connect

    connection = connect(url)
    try:
        volatile_by_design(connection, Keys(config.key_prefix))
    finally:
        connection.close()


def _stopping(note: str) -> None:
    """Log `note` once the service stops; a further Ctrl-C or SIGTERM says it again instead of breaking the stop
    off half-way (which would leave workers writing to a Redis that is gone)."""
    log.info(note)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: log.warning("already %s", note))


def banner(base: str, *, workers: str, redis: str | None, access: str, registry: Registry) -> str:
    """What `up` prints once it serves: where everything is, and the platform files that failed to load."""
    lines = [
        f"\ncollector {__version__} is up",
        f"  console    {base}/ui/",
        f"  API        {base}/system/alive",
        f"  platforms  {base}/platforms/get",
        f"  dashboard  {base}/rq",
        f"  workers    {workers}",
        f"  Redis      {redis}",
        f"  access     {access}",
        f"  API docs   {base}/docs",
    ]
    for name, why in sorted(registry.broken.items()):
        lines.append(f"  BROKEN     platform {name!r}: {registry.file_of(name)} failed to load ({why}); "
                     "its jobs are refused until it is fixed and the service restarted")
    lines.append("Press Ctrl-C to stop everything.\n")
    return "\n".join(lines)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
