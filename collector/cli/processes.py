"""The client commands for people in the loop: `processes`, `inbox`, `ack`, `finalize`, `rerun`."""

from __future__ import annotations

import argparse
from typing import Any

from collector import defaults
from collector.cli import display
from collector.cli.client import client_for, emit
from collector.config import Config


def add_process_commands(sub: Any) -> None:
    """Register the commands on the `collector` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the service (default: COLLECTOR_URL or {defaults.URL})")
    common.add_argument("--json", action="store_true", help="print the service's JSON answer, for scripts")

    listing = sub.add_parser("processes", parents=[common],
                             help="step processes, newest first; with an ID, that process's steps and tasks")
    listing.add_argument("process_id", nargs="?", metavar="ID", help="show this process")
    listing.add_argument("--status", help="only processes in this status (running, passed, failed, void)")
    listing.add_argument("--name", help="only processes of this definition name")
    listing.add_argument("--limit", type=int, default=defaults.LIST_LIMIT, help="processes per page")
    listing.add_argument("--cursor", help="the page after the one that printed this cursor")
    listing.set_defaults(handler=cmd_processes)

    inbox = sub.add_parser("inbox", parents=[common], help="what waits for a person: inputs, sign-offs, decisions")
    inbox.set_defaults(handler=cmd_inbox)

    ack = sub.add_parser("ack", parents=[common], help="sign off a manual task (OK or FAIL)")
    ack.add_argument("process_id", metavar="ID")
    ack.add_argument("task", metavar="TASK")
    ack.add_argument("result", choices=["OK", "FAIL"], type=str.upper)
    ack.add_argument("--reason", help="why (required with FAIL)")
    ack.add_argument("--note", help="anything else to keep in the history")
    ack.set_defaults(handler=cmd_ack)

    finalize = sub.add_parser("finalize", parents=[common],
                              help="close the open step: OK skips its failed tasks, FAIL fails the process")
    finalize.add_argument("process_id", metavar="ID")
    finalize.add_argument("step", metavar="STEP")
    finalize.add_argument("result", choices=["OK", "FAIL"], type=str.upper)
    finalize.add_argument("--reason", help="why")
    finalize.add_argument("--note", help="anything else to keep in the history")
    finalize.set_defaults(handler=cmd_finalize)

    rerun = sub.add_parser("rerun", parents=[common], help="run a task of the open step again, as a new attempt")
    rerun.add_argument("process_id", metavar="ID")
    rerun.add_argument("task", metavar="TASK")
    rerun.add_argument("--note", help="why, kept in the history")
    rerun.set_defaults(handler=cmd_rerun)


def _verdict(args: argparse.Namespace) -> dict[str, Any]:
    body = {"result": args.result, "reason": args.reason, "note": args.note}
    return {k: v for k, v in body.items() if v is not None}


def cmd_processes(args: argparse.Namespace, config: Config) -> int:
    client = client_for(args, config)
    if args.process_id:
        view = client.request("GET", "/process/get", params={"process_id": args.process_id})
        emit(args, view, process_text(view))
        return 0
    page = client.request("GET", "/process/list", params={
        "status": args.status, "name": args.name, "limit": args.limit, "cursor": args.cursor})
    rows = [(p["process_id"], p["name"], p["status"], f"{p['step']['name']} ({p['step']['status']})",
             p.get("created_at"), p.get("ended_at") or "") for p in page["processes"]]
    human = display.table(rows, ["PROCESS ID", "NAME", "STATUS", "STEP", "CREATED", "ENDED"]) if rows else (
        "no processes" + (" match" if args.status or args.name else ""))
    if page.get("next_cursor"):
        human += f"\nmore: collector processes --cursor {page['next_cursor']}"
    emit(args, page, human)
    return 0


def cmd_inbox(args: argparse.Namespace, config: Config) -> int:
    answer = client_for(args, config).request("GET", "/inbox")
    rows = []
    for item in answer["items"]:
        if item["kind"] == "input":
            what = f"job {item['job_id']} ({item.get('platform_id')}) waits for {item.get('name')!r}"
            how = f"collector resume {item['job_id']} (or {item['action']})"
        elif item["kind"] == "sign-off":
            what = f"process {item['process']} step {item['step']}: task {item['task']!r}"
            how = f"collector ack {item['process_id']} {item['task']} OK|FAIL"
        else:
            what = f"process {item['process']} step {item['step']}: failed {', '.join(item['failed'])}"
            how = f"collector finalize {item['process_id']} {item['step']} OK|FAIL, or collector rerun"
        rows.append((item.get("since") or "", item["kind"], what, item.get("prompt") or "", how, item["scope"]))
    human = display.table(rows, ["SINCE", "KIND", "WHAT", "PROMPT", "DO", "SCOPE"]) if rows else "nothing waits"
    if answer.get("truncated"):
        human += f"\n({answer['count']} in all; the oldest are shown)"
    emit(args, answer, human)
    return 0


def cmd_ack(args: argparse.Namespace, config: Config) -> int:
    view = client_for(args, config).request("POST", "/process/ack", params={
        "process_id": args.process_id, "task": args.task}, body=_verdict(args))
    emit(args, view, process_text(view))
    return 0


def cmd_finalize(args: argparse.Namespace, config: Config) -> int:
    view = client_for(args, config).request("POST", "/process/finalize", params={
        "process_id": args.process_id, "step": args.step}, body=_verdict(args))
    emit(args, view, process_text(view))
    return 0


def cmd_rerun(args: argparse.Namespace, config: Config) -> int:
    body = {"note": args.note} if args.note else None
    view = client_for(args, config).request("POST", "/process/rerun", params={
        "process_id": args.process_id, "task": args.task}, body=body)
    emit(args, view, process_text(view))
    return 0


def process_text(view: dict[str, Any]) -> str:
    """A process for people: its status, then one line per task of each step."""
    lines = [f"process {view['process_id']} ({view['name']}): {view['status']}"]
    rows = []
    for index, step in enumerate(view["steps"]):
        marker = "→" if index == view.get("current_step") and view["status"] == "running" else " "
        for task in step["tasks"]:
            outcome = task.get("error", {}).get("message", "") if task.get("error") else ""
            rows.append((f"{marker} {step['name']} ({step['status']})", task["name"], task["status"],
                         task.get("attempt"), task.get("job_id") or ("manual" if task.get("kind") == "manual" else ""),
                         task.get("acked_by") or "", outcome[:80]))
    lines.append(display.table(rows, ["STEP", "TASK", "STATUS", "ATTEMPT", "JOB", "BY", "ERROR"]))
    return "\n".join(lines)
