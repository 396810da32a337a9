"""Queueing notifications: a job spec's `notify` names `http` connections (specs/notify.py); when the job finishes,
fails or starts to wait, one delivery per target that asked for the event is queued in the same transaction
(store/deliveries.py). Pools send them (workflows/delivery.py)."""

from __future__ import annotations

from typing import Any

from collector.store import deliveries
from collector.store.records import JobStore
from collector.types import iso


def queue_for(pipe: Any, store: JobStore, job_id: str, event: str, **data: Any) -> int:
    """Queue on `pipe` a delivery of `event` to every target of the job that asked for it; how many.

    The targets are read on a connection of their own (they never change after submit), so this works inside
    the caller's MULTI."""
    fields = store.read(job_id, "notify", "platform_id", "client_id", "schedule_id")
    wanted = [t for t in fields.pop("notify", None) or [] if event in (t.get("on") or ())]
    if not wanted:
        return 0
    body = {"event": event, "job_id": job_id, "at": iso(), **fields, **data}
    for target in wanted:
        deliveries.queue(pipe, store.keys, job_id=job_id, connection=target["connection"], event=event, body=body)
    return len(wanted)
