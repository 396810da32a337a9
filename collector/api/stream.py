"""`GET /execution/stream`: server-sent events of one or more jobs (status, progress, events), bounded in time.

A stream holds one HTTP thread while it runs, so it is bounded: it ends when every job it watches has ended, or
after `COLLECTOR_STREAM_MAX_S` (a browser's EventSource then reconnects by itself, after the `retry` it was
told), and at most half of `COLLECTOR_HTTP_THREADS` streams run at once in one API process (a 503 past that,
which EventSource retries too), so streams never take every thread from the API.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, request

from collector.api.requests import job_id_param
from collector.api.services import Services
from collector.errors import BadRequestError, ServiceUnavailableError
from collector.store.index import read_jobs
from collector.store.records import ENDED, JOB_ID

POLL_S = 0.25          # how often a stream of one job looks at its record and events
LIST_POLL_S = 1.0      # how often a stream of several jobs (the jobs page) looks at their records
HEARTBEAT_S = 15.0     # a comment line this often keeps proxies from closing a quiet stream
RETRY_MS = 2000        # what EventSource waits before it reconnects
MAX_JOBS = 100         # jobs one stream may watch (the jobs page watches those it shows)
WATCHED = ("status", "progress", "error", "started_at", "ended_at")


def job_ids_param() -> list[str]:
    """The `job_id` values of the query (one or more), each checked."""
    given = request.args.getlist("job_id")
    if len(given) <= 1:
        return [job_id_param()]
    if len(given) > MAX_JOBS or not all(JOB_ID.fullmatch(job_id) for job_id in given):
        raise BadRequestError(f"give 1 to {MAX_JOBS} job ids, each 1-64 letters, digits, '-' or '_'",
                              details={"job_id": ["not a list of job ids"]})
    return list(dict.fromkeys(given))


def open_stream(svc: Services, job_ids: list[str]) -> Response:
    """The streaming answer for `job_ids`; `NotFoundError` when none has a record, 503 when too many streams run."""
    for job_id in job_ids:
        if svc.store.exists(job_id):
            break
    else:
        svc.view(job_ids[0], full=False)  # raises the 404 (or 410) of a missing job
    slots = _slots()
    if not slots.acquire(blocking=False):
        busy = ServiceUnavailableError(
            "too many event streams are open in this API process (at most half of COLLECTOR_HTTP_THREADS); try again "
            "shortly, or poll GET /execution/get")
        busy.headers = {"Retry-After": "2"}  # type: ignore[attr-defined]
        raise busy
    response = Response(events(svc, job_ids, max_s=svc.config.stream_max_s), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.call_on_close(slots.release)  # the server closes every answer, read to its end or not
    return response


def _slots() -> threading.BoundedSemaphore:
    slots = current_app.extensions.get("collector.streams")
    if slots is None:
        threads = current_app.extensions["collector"].config.http_threads
        slots = current_app.extensions.setdefault("collector.streams", threading.BoundedSemaphore(max(1, threads // 2)))
    return slots


def message(kind: str, data: Any) -> str:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def events(svc: Services, job_ids: list[str], *, max_s: float, poll_s: float | None = None) -> Iterator[str]:
    """The events of `job_ids` until all have ended or `max_s` has passed: `status` and `progress` when they
    change (with `job_id`), each new `event` of the timeline (of a single job: a list of jobs needs only their
    states), then `end` with why the stream ended."""
    poll_s = poll_s if poll_s is not None else POLL_S if len(job_ids) == 1 else LIST_POLL_S
    yield f"retry: {RETRY_MS}\n\n"
    seen: dict[str, dict[str, Any]] = {}
    after: dict[str, str | None] = {job_id: None for job_id in job_ids}
    deadline = time.monotonic() + max_s
    beat = time.monotonic() + HEARTBEAT_S
    while True:
        ended = 0
        for job_id, record in zip(job_ids, read_jobs(svc.connection, svc.store.keys, job_ids, WATCHED), strict=True):
            if not record:
                ended += 1
                continue
            for kind in ("status", "progress"):
                if record.get(kind) != seen.get(job_id, {}).get(kind) and record.get(kind) is not None:
                    yield message(kind, {"job_id": job_id, kind: record.get(kind), **_times(record)})
            seen[job_id] = record
            for event in svc.store.events(job_id, after=after[job_id]) if len(job_ids) == 1 else ():
                after[job_id] = event["id"]
                yield message("event", {"job_id": job_id, **event})
            ended += record.get("status") in ENDED
        if ended == len(job_ids):
            yield message("end", {"reason": "ended"})
            return
        if time.monotonic() >= deadline:
            yield message("end", {"reason": "time limit", "max_s": max_s})
            return
        if time.monotonic() >= beat:
            beat = time.monotonic() + HEARTBEAT_S
            yield ": keep-alive\n\n"
        time.sleep(poll_s)


def _times(record: dict[str, Any]) -> dict[str, Any]:
    return {"error": record.get("error"), "started_at": record.get("started_at"), "ended_at": record.get("ended_at")}
