"""`/process/…`: step processes with platform tasks and manual sign-off."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from collector.api.execution import read_json
from collector.app import services
from collector.auth import caller
from collector.errors import BadRequestError
from collector.processes import Processes, note_of
from collector.ratelimit import admit
from collector.state import JOB_ID

blueprint = Blueprint("processes", __name__)


def processes() -> Processes:
    return Processes(services().submitter)


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


@blueprint.post("/process/run")
def run() -> tuple[dict[str, Any], int]:
    return processes().run(read_json(), admit=admit), 201


@blueprint.get("/process/get")
def get() -> dict[str, Any]:
    return processes().get(process_id_param())


@blueprint.post("/process/ack")
def ack() -> dict[str, Any]:
    return processes().ack(process_id_param(), task_param(), read_json(), by=caller())


@blueprint.post("/process/rerun")
def rerun() -> dict[str, Any]:
    body = read_json() if request.content_length else {}
    if not isinstance(body, dict) or set(body) - {"note", "by"}:
        raise BadRequestError('the body must be a JSON object like {"note": "the source is back"} (or leave it out)')
    return processes().rerun(process_id_param(), task_param(), by=caller(), note=note_of(body))
