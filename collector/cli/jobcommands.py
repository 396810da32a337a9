"""The CLI's commands that act on one job of a running service: `resume`, `retry` and `events` (`--follow`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from collector.cli import display
from collector.cli.client import ENDED, POLL_S, Client, client_for, emit, wait
from collector.config import Config
from collector.defaults import URL
from collector.errors import CollectorError


def add_job_commands(sub: Any) -> None:
    """`resume`, `retry` and `events` on the `collector` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the service (default: COLLECTOR_URL or {URL})")
    common.add_argument("--json", action="store_true", help="print the service's JSON answer, for scripts")

    resume = sub.add_parser("resume", parents=[common], help="deliver the input a waiting job asked for")
    resume.add_argument("job_id", metavar="ID")
    resume.add_argument("--token", help="the resume token (default: the one the job shows while it waits)")
    resume.add_argument("--input", metavar="JSON", help='the input as a JSON object, e.g. \'{"code": "123456"}\'')
    resume.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="one field of the input (JSON or text); repeat for more")
    resume.set_defaults(handler=cmd_resume)

    retry = sub.add_parser("retry", parents=[common],
                           help="queue a failed, stopped or canceled job again, from its last checkpoint")
    retry.add_argument("job_id", metavar="ID")
    retry.add_argument("--wait", action="store_true", help="show progress until it ends; exit 0 only if finished")
    retry.set_defaults(handler=cmd_retry)

    events = sub.add_parser("events", parents=[common], help="a job's events, oldest first")
    events.add_argument("job_id", metavar="ID")
    events.add_argument("--follow", "-f", action="store_true",
                        help="keep printing new events until the job ends (JSON lines with --json)")
    events.set_defaults(handler=cmd_events)


def resume_input(args: argparse.Namespace) -> dict[str, Any]:
    """The input of `collector resume`: `--input` JSON, then each `--set NAME=VALUE` over it."""
    from collector.devkit.specsource import parse_value

    given: Any = {}
    if args.input:
        try:
            given = json.loads(args.input)
        except ValueError as exc:
            raise CollectorError(f"--input is not JSON ({exc}); give an object, e.g. --input '{{\"code\": \"1\"}}'"
                                 ) from None
        if not isinstance(given, dict):
            raise CollectorError(f"--input is a JSON {type(given).__name__}; the input is a JSON object")
    for assignment in args.set or []:
        name, sep, raw = assignment.partition("=")
        if not sep or not name.strip():
            raise CollectorError(f"--set {assignment!r} is not NAME=VALUE; write e.g. --set code=123456")
        given[name.strip()] = parse_value(raw)
    return given


def cmd_resume(args: argparse.Namespace, config: Config) -> int:
    client = client_for(args, config)
    token = args.token
    if not token:
        view = client.get(args.job_id)
        token = (view.get("waiting") or {}).get("resume_token")
        if not token:
            raise CollectorError(f"job {args.job_id} is {view.get('status')!r}, not waiting for input; there is "
                                 "nothing to resume")
    answer = client.request("POST", "/execution/resume", params={"job_id": args.job_id},
                            body={"token": token, "input": resume_input(args)})
    emit(args, answer, f"job {args.job_id} {answer['status']}: input {answer.get('resumed')!r} delivered")
    return 0


def cmd_retry(args: argparse.Namespace, config: Config) -> int:
    client = client_for(args, config)
    answer = client.request("POST", "/execution/retry", params={"job_id": args.job_id})
    start = " from its last checkpoint" if answer.get("from_checkpoint") else " from the start (no checkpoint)"
    if not args.wait:
        emit(args, answer, f"job {args.job_id} {answer['status']} again (it was {answer.get('previous')}){start}")
        return 0
    if not args.json:
        print(f"job {args.job_id} {answer['status']} again{start}", file=sys.stderr)
    view = wait(client, args.job_id, out=sys.stderr, quiet=args.json)
    emit(args, view, display.summary(view))
    return 0 if view.get("status") == "finished" else 1


def line(event: dict[str, Any]) -> str:
    """One event as `AT  TYPE  details`: a log line's level and message, the other fields as compact JSON."""
    rest = {k: v for k, v in event.items() if k not in ("id", "at", "type")}
    if event.get("type") == "log":
        details = f"{rest.pop('level', '')} {rest.pop('message', '')}"
    else:
        details = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in rest.items())
    return f"{event.get('at', '')}  {event.get('type', ''):<16} {details}".rstrip()


def follow(client: Client, job_id: str, *, as_json: bool, poll_s: float = POLL_S) -> str | None:
    """Print the job's events as they come until it ends; its last status."""
    after: str | None = None
    while True:
        found = client.request("GET", "/execution/events", params={"job_id": job_id, "after": after})
        for event in found:
            print(json.dumps(event) if as_json else line(event), flush=True)
        if found:
            after = found[-1]["id"]
        status = client.get(job_id).get("status")
        if status in ENDED:
            more = client.request("GET", "/execution/events", params={"job_id": job_id, "after": after})
            for event in more:  # what was written between the two reads
                print(json.dumps(event) if as_json else line(event), flush=True)
            return status
        time.sleep(poll_s)


def cmd_events(args: argparse.Namespace, config: Config) -> int:
    client = client_for(args, config)
    if args.follow:
        status = follow(client, args.job_id, as_json=args.json)
        return 0 if status == "finished" else 1
    found = client.request("GET", "/execution/events", params={"job_id": args.job_id})
    emit(args, found, "\n".join(line(e) for e in found) or "no events")
    return 0
