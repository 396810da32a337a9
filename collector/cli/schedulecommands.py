"""`collector schedules`: list, show, create, delete, pause and resume the service's schedules over HTTP."""

from __future__ import annotations

import argparse
import json
from typing import Any

from collector.cli import display
from collector.cli.client import client_for, emit, read_spec
from collector.config import Config
from collector.errors import CollectorError, ServiceError


def add_schedule_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`collector schedules [list | show ID | create FILE | delete ID | pause ID | resume ID]`, each with `--url` and
    `--json`."""
    schedules = sub.add_parser("schedules", parents=[common], help="the schedules: list (default), show, create, "
                                                                   "delete, pause, resume")
    schedules.set_defaults(handler=list_schedules)
    actions = schedules.add_subparsers(metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="every schedule with its next run")
    listing.set_defaults(handler=list_schedules)
    show = actions.add_parser("show", parents=[common], help="one schedule with its spec")
    show.add_argument("schedule_id", metavar="ID")
    show.set_defaults(handler=show_schedule)
    create = actions.add_parser("create", parents=[common], help='add one: a JSON file {"spec": {...}, "cron": '
                                                                 '"0 * * * *"} (or "interval_s"); - reads stdin')
    create.add_argument("body", metavar="SCHEDULE.json")
    create.set_defaults(handler=create_schedule)
    delete = actions.add_parser("delete", parents=[common], help="stop one (jobs already queued still run)")
    delete.add_argument("schedule_id", metavar="ID")
    delete.set_defaults(handler=delete_schedule)
    for verb, what in (("pause", "stop firing one until it is resumed"),
                       ("resume", "fire a paused one again, its next run computed from now")):
        action = actions.add_parser(verb, parents=[common], help=what)
        action.add_argument("schedule_id", metavar="ID")
        action.set_defaults(handler=change_schedule, verb=verb)


def _next_run(schedule: dict[str, Any]) -> str:
    return "paused" if schedule.get("paused") else str(schedule.get("next_run_at"))


def _every(schedule: dict[str, Any]) -> str:
    return schedule.get("cron") or f"every {schedule.get('interval_s')} s"


def list_schedules(args: argparse.Namespace, config: Config) -> int:
    answer = client_for(args, config).request("GET", "/schedules")
    rows = [(s["id"], s.get("name"), _every(s), _next_run(s), s.get("runs"), s.get("last_job_id") or "")
            for s in answer.get("schedules", [])]
    human = display.table(rows, ["ID", "NAME", "WHEN", "NEXT RUN", "RUNS", "LAST JOB"]) if rows else "no schedules"
    emit(args, answer, human)
    return 0


def show_schedule(args: argparse.Namespace, config: Config) -> int:
    schedule = client_for(args, config).request("GET", f"/schedules/{args.schedule_id}")
    emit(args, schedule, _describe(schedule))
    return 0


def create_schedule(args: argparse.Namespace, config: Config) -> int:
    try:
        schedule = client_for(args, config).request("POST", "/schedules", body=read_spec(args.body))
    except ServiceError as exc:
        if exc.status == 422 and isinstance(exc.body, dict):
            problems = "\n".join(f"  {path}: {'; '.join(map(str, msgs))}" for path, msgs in exc.details.items())
            raise CollectorError(f"{exc.body.get('message')}\n{problems}") from None
        raise
    emit(args, schedule, f"schedule {schedule['id']} created\n{_describe(schedule)}")
    return 0


def delete_schedule(args: argparse.Namespace, config: Config) -> int:
    answer = client_for(args, config).request("DELETE", f"/schedules/{args.schedule_id}")
    emit(args, answer, f"schedule {args.schedule_id} deleted")
    return 0


def change_schedule(args: argparse.Namespace, config: Config) -> int:
    """`pause ID` or `resume ID`."""
    schedule = client_for(args, config).request("POST", f"/schedules/{args.schedule_id}/{args.verb}")
    state = "paused" if schedule.get("paused") else f"next run {schedule.get('next_run_at')}"
    emit(args, schedule, f"schedule {args.schedule_id} {args.verb}d: {state}")
    return 0


def _describe(schedule: dict[str, Any]) -> str:
    lines = [f"{'name':<10} {schedule.get('name')}", f"{'when':<10} {_every(schedule)}",
             f"{'next run':<10} {_next_run(schedule)}", f"{'runs':<10} {schedule.get('runs')}",
             f"{'last job':<10} {schedule.get('last_job_id') or '-'}"]
    error = schedule.get("last_error")
    if isinstance(error, dict):
        lines.append(f"{'last error':<10} tick at {error.get('tick_at')}: {error.get('message')}")
        details = error.get("details")
        lines += [f"{'':<10} {field}: {'; '.join(map(str, problems)) if isinstance(problems, list) else problems}"
                  for field, problems in (details.items() if isinstance(details, dict) else ())]
    lines.append(f"{'spec':<10} {json.dumps(schedule.get('spec'), sort_keys=True)}")
    return "\n".join(lines)
