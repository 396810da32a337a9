"""What waits for a person (jobs waiting for input, manual tasks waiting for sign-off, blocked steps), and the
listing of processes, newest first."""

from __future__ import annotations

import json
from typing import Any

from collector import defaults
from collector.store.index import Cursor
from collector.store.records import decode_fields
from collector.workflows.processes import Processes

LIST_FIELDS = ("name", "version", "status", "current_step", "created_at", "ended_at", "replaced_by")
WAIT_FIELDS = ("status", "waiting", "platform_id", "client_id", "process_id")
PAGE = 100  # index entries read per round


def inbox(processes: Processes, *, limit: int = defaults.INBOX_MAX_ITEMS) -> dict[str, Any]:
    """Everything waiting for a person, oldest first. Each item names what to call (`action`, the endpoint's
    name in `endpoint`) and its `kind`: `input` (a job's `ctx.wait_for`), `sign-off` (a manual task), `decision`
    (a step blocked on failed tasks: re-run them or finalize the step)."""
    jobs, unread = _waiting_jobs(processes, limit * 2)
    items = jobs + _process_items(processes)
    items.sort(key=lambda item: (item.get("since") or "", item.get("job_id") or item.get("process_id") or ""))
    return {"items": items[:limit], "count": len(items) + unread, "truncated": len(items) > limit or unread > 0}


def _waiting_jobs(processes: Processes, most: int) -> tuple[list[dict[str, Any]], int]:
    """Jobs waiting for input (reading at most `most` waits, soonest deadline first), and how many were left."""
    connection, keys = processes.connection, processes.keys
    ids = [raw.decode() for raw in connection.zrange(keys.wait_deadlines(), 0, most - 1)]
    unread = max(0, connection.zcard(keys.wait_deadlines()) - len(ids))
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(job_id), list(WAIT_FIELDS))
        rows = pipe.execute() if ids else []
    items = []
    for job_id, values in zip(ids, rows, strict=True):
        record = decode_fields(WAIT_FIELDS, values)
        wait = record.get("waiting")
        if record.get("status") != "waiting" or not isinstance(wait, dict) or wait.get("kind") != "input":
            continue
        items.append({
            "kind": "input", "since": wait.get("since"), "job_id": job_id, "platform_id": record.get("platform_id"),
            "client_id": record.get("client_id"), "process_id": record.get("process_id"), "name": wait.get("name"),
            "prompt": wait.get("prompt", ""), "expects": wait.get("expects"), "until": wait.get("until"),
            "action": f"POST /execution/resume?job_id={job_id}", "endpoint": "execution.resume",
        })
    return items, unread


def _process_items(processes: Processes) -> list[dict[str, Any]]:
    items = []
    for doc in processes.active():
        if doc["status"] != "running":
            continue
        step = doc["steps"][doc["current_step"]]
        where = {"process_id": doc["id"], "process": doc["name"], "step": step["name"]}
        for task in step["tasks"]:
            if task["status"] == "waiting":
                items.append({"kind": "sign-off", "since": task.get("started_at") or doc["created_at"], **where,
                              "task": task["name"], "attempt": task["attempt"], "prompt": task.get("prompt", ""),
                              "action": f"POST /process/ack?process_id={doc['id']}&task={task['name']}",
                              "endpoint": "processes.ack"})
        if step["status"] == "blocked":
            failed = [t for t in step["tasks"] if t["status"] == "fail"]
            items.append({"kind": "decision", "since": max((t.get("ended_at") or "" for t in failed), default=""),
                          **where, "failed": [t["name"] for t in failed],
                          "action": f"POST /process/finalize?process_id={doc['id']}&step={step['name']} "
                                    "(or POST /process/rerun of a failed task)",
                          "endpoint": "processes.finalize"})
    return items


def list_processes(processes: Processes, *, limit: int, cursor: Cursor | None = None, status: str | None = None,
                   name: str | None = None) -> dict[str, Any]:
    """Newest first, up to `limit` processes matching the filters; `next_cursor` while more may remain.
    Entries whose process has expired are dropped from the index as they are met."""
    connection, index = processes.connection, processes.keys.processes_index()
    found: list[dict[str, Any]] = []
    gone: list[str] = []
    last = cursor
    max_score = "+inf" if cursor is None else repr(cursor.score)
    offset, more = 0, True
    while len(found) < limit and more:
        entries = connection.zrevrangebyscore(index, max_score, "-inf", start=offset, num=PAGE, withscores=True)
        more = len(entries) == PAGE
        offset += len(entries)
        page = [(m.decode(), s) for m, s in entries
                if cursor is None or s != cursor.score or m.decode() < cursor.job_id]
        docs = connection.mget([processes.keys.process(i) for i, _ in page]) if page else []
        for (process_id, score), raw in zip(page, docs, strict=True):
            if raw is None:
                gone.append(process_id)
                continue
            doc = json.loads(raw)
            last = Cursor(score, process_id)
            if (status and doc["status"] != status) or (name and doc["name"] != name):
                continue
            found.append(_brief(doc))
            if len(found) == limit:
                break
    if gone:
        connection.zrem(index, *gone)
    later = len(found) == limit and last is not None and _below(processes, index, last)
    return {"processes": found, "next_cursor": last.encode() if later and last else None}


def _below(processes: Processes, index: str, last: Cursor) -> bool:
    """Whether any entry comes after `last` in newest-first order."""
    if processes.connection.zcount(index, "-inf", f"({last.score!r}"):
        return True
    same = processes.connection.zrangebyscore(index, repr(last.score), repr(last.score))
    return any(m.decode() < last.job_id for m in same)


def _brief(doc: dict[str, Any]) -> dict[str, Any]:
    step = doc["steps"][doc["current_step"]]
    return {"process_id": doc["id"], **{k: doc.get(k) for k in LIST_FIELDS},
            "step": {"name": step["name"], "status": step["status"]},
            "tasks": {t["name"]: t["status"] for s in doc["steps"] for t in s["tasks"]}}
