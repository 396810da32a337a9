"""Reading a request: its JSON body within the body limits, and its query parameters, each refused with a clear 400."""

from __future__ import annotations

import re
from typing import Any

from flask import request

from collector import defaults
from collector.api.limits import parse_body
from collector.api.services import services
from collector.errors import BadRequestError
from collector.store.index import PLATFORM_ID, STATUSES, Cursor
from collector.store.records import JOB_ID
from collector.workflows.process_definition import note_of
from collector.workflows.processes import STATUSES as PROCESS_STATUSES

TRUE_WORDS = {"", "1", "true", "yes"}


def read_json() -> Any:
    """The request body as JSON; a clear 400 when it is not JSON or breaks a limit (depth, numbers, strings)."""
    if request.mimetype != "application/json":
        raise BadRequestError(
            f"the body must be JSON sent with Content-Type: application/json (got {request.mimetype or 'none'!r})"
        )
    config = services().config
    raw = request.get_data(cache=False)
    return parse_body(raw, max_depth=config.max_json_depth, max_string_chars=config.max_string_chars)


def job_id_param() -> str:
    job_id = request.args.get("job_id")
    if not job_id:
        raise BadRequestError("job_id is missing; call with ?job_id=<the id POST /execution/run answered>")
    if not JOB_ID.fullmatch(job_id):
        raise BadRequestError(
            f"job_id {job_id[:80]!r} is not a job id; ids are 1-64 letters, digits, '-' or '_'",
            details={"job_id": ["not a job id"]},
        )
    return job_id


EVENT_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def after_param() -> str | None:
    """`after` of `GET /execution/events`: only the events after this event id (what `--follow` polls with)."""
    after = request.args.get("after") or None
    if after is not None and not EVENT_ID.fullmatch(after):
        raise BadRequestError(
            f"after {after[:80]!r} is not an event id; give the `id` of the last event you have, e.g. 1732380000000-0",
            details={"after": ["not an event id"]},
        )
    return after


def flag(name: str) -> bool:
    """Whether the query has `name` set: present and empty, `1`, `true` or `yes`."""
    return name in request.args and request.args[name].lower() in TRUE_WORDS


def page_params(full: bool) -> tuple[int, int]:
    """`offset` and `limit` of a `full` answer of `GET /execution/get`: which rows of each dataset it holds."""
    max_limit = services().config.full_page_max_rows
    given = {name: request.args[name] for name in ("offset", "limit") if name in request.args}
    if given and not full:
        raise BadRequestError("offset and limit page the datasets' rows; add full to the query, or leave them out",
                              details={name: ["only with full"] for name in given})
    errors: dict[str, list[str]] = {}
    offset = _whole(given.get("offset", "0"))
    if offset is None or offset < 0:
        errors["offset"] = ["a whole number from 0: the first row of each dataset to answer"]
    limit = _whole(given.get("limit", str(min(defaults.FULL_PAGE_ROWS, max_limit))))
    if limit is None or not 1 <= limit <= max_limit:
        errors["limit"] = [f"a whole number from 1 to {max_limit} (COLLECTOR_FULL_PAGE_MAX_ROWS): rows per dataset"]
    if errors:
        shown = ", ".join(f"{name}={given.get(name, '')[:20]!r}" for name in errors)
        raise BadRequestError(f"{shown}: {'; '.join(f'{n} must be {m[0]}' for n, m in errors.items())}",
                              details=errors)
    return offset or 0, limit or 1


def _whole(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


# Who cancels is the API token's name; what the caller writes is a reason. Older clients wrote a name under
# `canceled_by` or `by`: it is kept, as the reason.
REASON_NAMES = ("reason", "canceled_by", "by")
REASON_MAX_CHARS = 500


def cancel_reason() -> str | None:
    """The caller's reason for a cancel, from the query or an optional JSON body."""
    given = {name: request.args[name] for name in REASON_NAMES if name in request.args}
    if request.content_length:
        body = read_json()
        if not isinstance(body, dict) or any(not isinstance(body.get(name, ""), str) for name in REASON_NAMES):
            raise BadRequestError('the body must be a JSON object like {"reason": "wrong dates"} (or leave it out)')
        given.update({name: body[name] for name in REASON_NAMES if name in body})
    too_long = sorted(name for name, text in given.items() if len(text) > REASON_MAX_CHARS)
    if too_long:
        raise BadRequestError(f"{too_long[0]} is {len(given[too_long[0]])} characters; give at most {REASON_MAX_CHARS}",
                              details={name: [f"at most {REASON_MAX_CHARS} characters"] for name in too_long})
    return next((given[name] for name in REASON_NAMES if given.get(name)), None)


def list_query() -> dict[str, Any]:
    """`GET /execution/list`'s parameters: `limit`, `cursor`, `status` and `platform_id`, each checked."""
    args = request.args
    platform_id = args.get("platform_id") or None
    if platform_id is not None and not PLATFORM_ID.fullmatch(platform_id):
        raise BadRequestError(
            f"platform_id {platform_id[:80]!r} is not a platform id; ids are Python module names (GET /platforms/get)",
            details={"platform_id": ["not a platform id"]},
        )
    return {
        "limit": parse_limit(args.get("limit")),
        "cursor": Cursor.decode(args["cursor"]) if args.get("cursor") else None,
        "status": parse_status(args.get("status")),
        "platform_id": platform_id,
    }


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return defaults.LIST_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= defaults.LIST_MAX_LIMIT:
        raise BadRequestError(
            f"limit {raw[:20]!r} is not a whole number from 1 to {defaults.LIST_MAX_LIMIT}; "
            f"leave it out for {defaults.LIST_LIMIT}",
            details={"limit": [f"a whole number from 1 to {defaults.LIST_MAX_LIMIT}"]},
        )
    return limit


def parse_status(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if raw not in STATUSES:
        raise BadRequestError(
            f"status {raw[:40]!r} is not a job status; use one of {list(STATUSES)}",
            details={"status": [f"one of {list(STATUSES)}"]},
        )
    return raw


def process_id_param() -> str:
    process_id = request.args.get("process_id")
    if not process_id:
        raise BadRequestError("process_id is missing; call with ?process_id=<the id POST /process/run answered>")
    if not JOB_ID.fullmatch(process_id):
        raise BadRequestError(f"process_id {process_id[:80]!r} is not a process id")
    return process_id


def task_param() -> str:
    task = request.args.get("task")
    if not task or len(task) > 200:
        raise BadRequestError("task is missing; call with &task=<the task's name in the process definition>")
    return task


def step_param() -> str:
    step = request.args.get("step")
    if not step or len(step) > 200:
        raise BadRequestError("step is missing; call with &step=<the step's name in the process definition>")
    return step


def process_list_query() -> dict[str, Any]:
    """`GET /process/list`'s parameters: `limit`, `cursor`, `status` and `name`, each checked."""
    args = request.args
    status = args.get("status") or None
    if status is not None and status not in PROCESS_STATUSES:
        raise BadRequestError(f"status {status[:40]!r} is not a process status; use one of {list(PROCESS_STATUSES)}",
                              details={"status": [f"one of {list(PROCESS_STATUSES)}"]})
    name = args.get("name") or None
    if name is not None and len(name) > 200:
        raise BadRequestError("name is at most 200 characters, like a process's name",
                              details={"name": ["at most 200 characters"]})
    return {
        "limit": parse_limit(args.get("limit")),
        "cursor": Cursor.decode(args["cursor"]) if args.get("cursor") else None,
        "status": status,
        "name": name,
    }


def rerun_note() -> str | None:
    """The caller's note on a re-run: the optional body `{"note": ...}` (`by`, which older clients sent as who
    acted, is taken as the note)."""
    body = read_json() if request.content_length else {}
    if not isinstance(body, dict) or set(body) - {"note", "by"}:
        raise BadRequestError('the body must be a JSON object like {"note": "the source is back"} (or leave it out)')
    return note_of(body)


def checked_schedule_id(value: str) -> str:
    """A schedule id from the path, checked."""
    if not JOB_ID.fullmatch(value):
        raise BadRequestError(f"{value[:80]!r} is not a schedule id; GET /schedules lists them")
    return value
