"""`/schedules`: job specs run on a cron expression or an interval."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from collector.api.execution import read_json
from collector.app import services
from collector.errors import BadRequestError
from collector.ratelimit import admit
from collector.schedules import Schedules
from collector.state import JOB_ID

blueprint = Blueprint("schedules", __name__)


def schedules() -> Schedules:
    return Schedules(services().submitter)


def checked(schedule_id: str) -> str:
    if not JOB_ID.fullmatch(schedule_id):
        raise BadRequestError(f"{schedule_id[:80]!r} is not a schedule id; GET /schedules lists them")
    return schedule_id


@blueprint.post("/schedules")
def create() -> tuple[dict[str, Any], int]:
    return schedules().create(read_json(), admit=admit), 201


@blueprint.get("/schedules")
def list_all() -> dict[str, Any]:
    return {"schedules": schedules().all()}


@blueprint.get("/schedules/<schedule_id>")
def get(schedule_id: str) -> dict[str, Any]:
    return schedules().get(checked(schedule_id))


@blueprint.delete("/schedules/<schedule_id>")
def delete(schedule_id: str) -> dict[str, Any]:
    schedules().delete(checked(schedule_id))
    return {"deleted": schedule_id}
