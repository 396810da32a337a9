"""`/process/…`: step processes with platform tasks and manual sign-off; `/inbox`: what waits for a person."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from collector.api.auth import caller
from collector.api.requests import (
    process_id_param,
    process_list_query,
    read_json,
    rerun_note,
    step_param,
    task_param,
)
from collector.api.services import services

blueprint = Blueprint("processes", __name__)


@blueprint.post("/process/run")
def run() -> tuple[dict[str, Any], int]:
    return services().run_process(read_json(), by=caller()), 201


@blueprint.get("/process/get")
def get() -> dict[str, Any]:
    return services().processes.get(process_id_param())


@blueprint.get("/process/list")
def list_processes() -> dict[str, Any]:
    return services().list_processes(**process_list_query())


@blueprint.post("/process/ack")
def ack() -> dict[str, Any]:
    return services().processes.ack(process_id_param(), task_param(), read_json(), by=caller())


@blueprint.post("/process/rerun")
def rerun() -> dict[str, Any]:
    return services().processes.rerun(process_id_param(), task_param(), by=caller(), note=rerun_note())


@blueprint.post("/process/finalize")
def finalize() -> dict[str, Any]:
    return services().processes.finalize(process_id_param(), step_param(), read_json(), by=caller())


@blueprint.get("/inbox")
def inbox() -> dict[str, Any]:
    return services().inbox()
