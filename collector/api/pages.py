"""What each console page shows, assembled from the same service calls the JSON views make (never HTTP to itself)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from collector.api.auth import caller_may
from collector.api.forms import resume_fields
from collector.api.services import Services
from collector.api.tokens import SCOPES
from collector.store.index import STATUSES, Cursor
from collector.store.records import ENDED
from collector.workflows.processes import STATUSES as PROCESS_STATUSES

JOBS_PER_PAGE = 50
ROWS_PER_PAGE = 50  # dataset rows per page of a job's tables


def allowed(scope: str) -> bool:
    """Whether the signed-in token (or anyone, in open mode) has `scope`: what a page offers follows it."""
    return caller_may(scope)


def scopes() -> list[str]:
    return [scope for scope in SCOPES if allowed(scope)]


def _moment(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def duration(started: Any, ended: Any) -> str:
    """`1m 05s` from start to end (or to now while it runs); empty before it started."""
    begin = _moment(started)
    if begin is None:
        return ""
    seconds = int(((_moment(ended) or dt.datetime.now(dt.UTC)) - begin).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    return (f"{hours}h " if hours else "") + (f"{rest // 60}m " if hours or rest >= 60 else "") + f"{rest % 60:02d}s"


def percent(progress: Any, status: Any = None) -> float:
    if status == "finished":
        return 100.0
    if not isinstance(progress, dict):
        return 0.0
    if progress.get("percent") is not None:
        return float(progress["percent"])
    done, total = progress.get("done"), progress.get("total")
    return round(100.0 * done / total, 1) if isinstance(done, int | float) and total else 0.0


def jobs_page(svc: Services, query: Mapping[str, Any]) -> dict[str, Any]:
    """A page of the job index, newest first, filtered by status and platform (the query of GET /execution/list)."""
    listing = svc.list_jobs(limit=JOBS_PER_PAGE, cursor=query.get("cursor"), status=query.get("status"),
                            platform_id=query.get("platform_id"))
    for job in listing["jobs"]:
        job.update(percent=percent(job.get("progress"), job.get("status")), ended=job.get("status") in ENDED,
                   duration=duration(job.get("started_at"), job.get("ended_at")))
    return {**listing, "status": query.get("status") or "", "platform_id": query.get("platform_id") or "",
            "statuses": STATUSES, "platforms": sorted(svc.registry.platforms),
            "live": [job["job_id"] for job in listing["jobs"] if not job["ended"]]}


def job_page(svc: Services, job_id: str, *, offset: int) -> dict[str, Any]:
    """A job: its view with a page of its datasets' rows, its events, its attempts and the resume form's fields."""
    job = svc.view(job_id, full=True, offset=offset, limit=ROWS_PER_PAGE, with_resume=allowed("operate"))
    events = svc.events(job_id)
    waiting = job.get("waiting") if isinstance(job.get("waiting"), dict) else None
    tables = {}
    for name, rows in (job.get("datasets") or {}).items():
        columns = list(dict.fromkeys(key for row in rows if isinstance(row, dict) for key in row))
        tables[name] = {"columns": columns, "rows": [[_cell(row.get(c)) for c in columns] for row in rows
                                                     if isinstance(row, dict)]}
    page = job.get("datasets_page") or {}
    return {
        "job": job, "events": events, "percent": percent(job.get("progress"), job.get("status")), "tables": tables,
        "datasets_page": page, "previous_offset": max(0, offset - ROWS_PER_PAGE) if offset else None,
        "duration": duration(job.get("started_at"), job.get("ended_at")), "ended": job.get("status") in ENDED,
        "attempts": attempts(events),
        "waiting": waiting, "input_wait": waiting is not None and waiting.get("kind") == "input",
        "resume_fields": resume_fields(waiting) if waiting and waiting.get("kind") == "input" else [],
    }


OUTCOMES = frozenset({"finished", "failed", "stopped", "canceled", "waiting", "retry_scheduled", "requeued",
                      "worker_lost", "timed_out"})


def attempts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run of the job (a `started` event) with how it came to an end, from its events timeline."""
    runs: list[dict[str, Any]] = []
    for event in events:
        if event.get("type") == "started":
            runs.append({"n": len(runs) + 1, "started_at": event.get("at"), "worker": event.get("worker"),
                         "outcome": "running", "at": None, "why": ""})
        elif runs and runs[-1]["outcome"] == "running" and event.get("type") in OUTCOMES:
            error = event.get("error") if isinstance(event.get("error"), dict) else {}
            why = event.get("reason") or event.get("message") or error.get("message", "")
            runs[-1].update(outcome=event["type"], at=event.get("at"), why=str(why or ""))
    return runs


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def inbox_page(svc: Services) -> dict[str, Any]:
    answer = svc.inbox()
    for item in answer["items"]:
        item["can_act"] = allowed(item["scope"])
    return answer


def processes_page(svc: Services, query: Mapping[str, Any]) -> dict[str, Any]:
    listing = svc.list_processes(limit=JOBS_PER_PAGE, cursor=query.get("cursor"), status=query.get("status"),
                                 name=query.get("name"))
    return {**listing, "status": query.get("status") or "", "statuses": PROCESS_STATUSES}


def process_page(svc: Services, process_id: str) -> dict[str, Any]:
    doc = svc.processes.get(process_id)
    current = doc["steps"][doc["current_step"]] if doc.get("steps") else None
    return {"process": doc, "open_step": current["name"] if current and doc["status"] == "running" else None}


def schedules_page(svc: Services) -> dict[str, Any]:
    return {"schedules": svc.schedules.all()}


def submit_page(svc: Services) -> dict[str, Any]:
    return {"platforms": [spec.describe() for spec in svc.registry.platforms.values()]}


def cursor_of(raw: str | None) -> Cursor | None:
    return Cursor.decode(raw) if raw else None
