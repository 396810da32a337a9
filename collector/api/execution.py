"""`/execution/run`, `get`, `cancel`, `resume`, `events` and `list`: submit a job, read what is known about it,
cancel it, resume one that waits for input, list recent jobs (newest first, paginated, from the job index)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from collector.api.requests import canceled_by, flag, job_id_param, list_query, read_json
from collector.api.services import services

blueprint = Blueprint("execution", __name__)


@blueprint.post("/execution/run")
def run() -> tuple[dict[str, Any], int]:
    return services().submit(read_json()), 202


@blueprint.get("/execution/get")
def get() -> dict[str, Any]:
    return services().view(job_id_param(), full=flag("full"))


@blueprint.post("/execution/resume")
def resume() -> tuple[dict[str, Any], int]:
    job_id = job_id_param()
    return services().resume(job_id, read_json()), 202


@blueprint.post("/execution/cancel")
def cancel() -> tuple[dict[str, Any], int]:
    job_id = job_id_param()
    answer = services().cancel(job_id, by=canceled_by())
    return answer, 200 if answer["status"] == "canceled" else 202


@blueprint.get("/execution/events")
def events() -> ResponseReturnValue:
    return jsonify(services().events(job_id_param()))


@blueprint.get("/execution/list")
def list_jobs() -> dict[str, Any]:
    return services().list_jobs(**list_query())
