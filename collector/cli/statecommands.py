"""`collector state`: show or reset the incremental state the runs of a state key hand on, over HTTP."""

from __future__ import annotations

import argparse
import json
from typing import Any

from collector.cli import display
from collector.cli.client import client_for, emit
from collector.config import Config


def add_state_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`collector state [show] KEY` and `collector state reset KEY`, each with `--platform`, `--url` and `--json`."""
    state = sub.add_parser("state", parents=[common], help="a state key's incremental state: show, reset")
    actions = state.add_subparsers(metavar="ACTION", required=True)
    show = actions.add_parser("show", parents=[common], help="what the last finished run of a key saved, per "
                                                             "platform")
    reset = actions.add_parser("reset", parents=[common], help="forget it: the key's next run starts over")
    for parser, handler in ((show, show_state), (reset, reset_state)):
        parser.add_argument("key", metavar="KEY", help="a schedule's id, or the state_key of job specs")
        parser.add_argument("--platform", help="only this platform's state")
        parser.set_defaults(handler=handler)


def show_state(args: argparse.Namespace, config: Config) -> int:
    answer = client_for(args, config).request("GET", "/state", params={"key": args.key,
                                                                       "platform_id": args.platform})
    rows = [(platform_id, entry.get("saved_at"), entry.get("job_id"), json.dumps(entry.get("state"), sort_keys=True))
            for platform_id, entry in sorted(answer.get("states", {}).items())]
    human = (display.table(rows, ["PLATFORM", "SAVED AT", "BY JOB", "STATE"]) if rows
             else f"no state saved for key {args.key!r}")
    emit(args, answer, human)
    return 0


def reset_state(args: argparse.Namespace, config: Config) -> int:
    answer = client_for(args, config).request("DELETE", "/state", params={"key": args.key,
                                                                          "platform_id": args.platform})
    done = answer.get("reset") or []
    human = (f"state key {args.key!r} reset for {', '.join(done)}" if done
             else f"state key {args.key!r} had no saved state")
    emit(args, answer, human)
    return 0
