"""Queueing notifications: a job spec's `notify` names `http` connections (specs/notify.py); when the job finishes,
fails or starts to wait, one delivery per target that asked for the event is queued in the same transaction
(store/deliveries.py). A step process's `notify` hears of its step changes, its manual tasks waiting for sign-off
and its end. Pools send them (workflows/delivery.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector.store import deliveries
from collector.store.records import JobStore, Keys
from collector.types import iso

NAMED = ("notify", "platform_id", "client_id", "schedule_id")  # the record's fields a notification needs


def queue_for(pipe: Any, store: JobStore, job_id: str, event: str, *, known: Mapping[str, Any] | None = None,
              **data: Any) -> int:
    """Queue on `pipe` a delivery of `event` to every target of the job that asked for it; how many.

    `known` holds the record's NAMED fields when the caller has read them (a worker, at the job's start); else
    they are read on a connection of their own (they never change after submit), which works inside the
    caller's MULTI."""
    fields = {k: v for k, v in (known if known is not None else store.read(job_id, *NAMED)).items() if v is not None}
    wanted = [t for t in fields.pop("notify", None) or [] if event in (t.get("on") or ())]
    if not wanted:
        return 0
    body = {"event": event, "job_id": job_id, "at": iso(), **fields, **data}
    for target in wanted:
        deliveries.queue(pipe, store.keys, job_id=job_id, connection=target["connection"], event=event, body=body)
    return len(wanted)


def process_changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """What a change of a process document tells: `step` for a step that changed status, `waiting` for a manual
    task that now waits for sign-off, `finished`/`failed` for the process's end."""
    told: list[tuple[str, dict[str, Any]]] = []
    for old, new in zip(before.get("steps") or [], after.get("steps") or [], strict=False):
        if old.get("status") != new.get("status") and new.get("status") != "pending":
            told.append(("step", {"step": new["name"], "step_status": new["status"]}))
        old_tasks = {t["name"]: t.get("status") for t in old.get("tasks") or []}
        for task in new.get("tasks") or []:
            if task.get("kind") == "manual" and task.get("status") == "waiting" != old_tasks.get(task["name"]):
                told.append(("waiting", {"step": new["name"], "task": task["name"], "prompt": task.get("prompt")}))
    ended = {"passed": "finished", "failed": "failed"}.get(after.get("status", ""))
    if ended and before.get("status") != after.get("status"):
        told.append((ended, {}))
    return told


def queue_for_process(pipe: Any, keys: Keys, before: dict[str, Any], after: dict[str, Any]) -> int:
    """Queue on `pipe` (inside the process update's MULTI) the deliveries its change tells its targets of."""
    targets = after.get("notify") or []
    if not targets:
        return 0
    queued = 0
    for event, data in process_changes(before, after):
        body = {"event": event, "process_id": after["id"], "name": after.get("name"), "at": iso(),
                "status": after.get("status"), **data}
        for target in targets:
            if event in (target.get("on") or ()):
                deliveries.queue(pipe, keys, job_id=after["id"], connection=target["connection"], event=event,
                                 body=body, subject="process")
                queued += 1
    return queued
