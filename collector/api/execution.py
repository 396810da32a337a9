"""`/execution/run`, `get`, `cancel`, `resume`, `callback`, `retry`, `events`, `stream` and `list`: submit a job,
read what is known about it, cancel it, resume one that waits for input (by POST, or by a GET link), retry one that
ended by hand, follow it as server-sent events, list recent jobs (newest first, paginated, from the job index)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from markupsafe import escape

from collector.api.auth import caller, caller_may
from collector.api.requests import (
    after_param,
    cancel_reason,
    flag,
    job_id_param,
    list_query,
    page_params,
    read_json,
)
from collector.api.services import services
from collector.api.stream import job_ids_param, open_stream

blueprint = Blueprint("execution", __name__)


@blueprint.post("/execution/run")
def run() -> tuple[dict[str, Any], int]:
    answer = services().submit(read_json(), by=caller())
    return answer, 200 if answer.get("deduplicated") else 202  # 200: the first job of its idempotency key


@blueprint.get("/execution/get")
def get() -> dict[str, Any]:
    full = flag("full")
    offset, limit = page_params(full)
    # The resume token and callback link resume the job: only for a caller who may (`operate`); the callback
    # needs no API token, so a `read` token must not see it.
    return services().view(job_id_param(), full=full, offset=offset, limit=limit, with_resume=caller_may("operate"))


@blueprint.post("/execution/resume")
def resume() -> tuple[dict[str, Any], int]:
    job_id = job_id_param()
    return services().resume(job_id, read_json(), by=caller()), 202


@blueprint.get("/execution/callback")
def callback() -> ResponseReturnValue:
    return _page(services().callback(request.args.to_dict(flat=False)), 202)


def _page(answer: dict[str, Any], status: int) -> ResponseReturnValue:
    """JSON, or a small HTML page for a browser (a person sent here by an identity provider's redirect)."""
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html":
        return answer, status
    text = f"Job {answer['job_id']} received {answer['resumed']!r} and is queued again. You may close this page."
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>collector</title></head>"
            f"<body><p>{escape(text)}</p></body></html>")
    return Response(page, status=status, mimetype="text/html")


@blueprint.post("/execution/cancel")
def cancel() -> tuple[dict[str, Any], int]:
    job_id = job_id_param()
    answer = services().cancel(job_id, by=caller(), reason=cancel_reason())
    return answer, 200 if answer["status"] == "canceled" else 202


@blueprint.post("/execution/retry")
def retry() -> tuple[dict[str, Any], int]:
    return services().retry(job_id_param(), by=caller()), 202


@blueprint.get("/execution/events")
def events() -> ResponseReturnValue:
    return jsonify(services().events(job_id_param(), after=after_param()))


@blueprint.get("/execution/list")
def list_jobs() -> dict[str, Any]:
    return services().list_jobs(**list_query())


@blueprint.get("/execution/stream")
def stream() -> Response:
    return open_stream(services(), job_ids_param())
