"""`/schedules`: job specs run on a cron expression or an interval; paused and resumed by hand."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from collector.api.auth import caller
from collector.api.requests import checked_schedule_id, read_json
from collector.api.services import services

blueprint = Blueprint("schedules", __name__)


@blueprint.post("/schedules")
def create() -> tuple[dict[str, Any], int]:
    return services().create_schedule(read_json(), by=caller()), 201


@blueprint.get("/schedules")
def list_all() -> dict[str, Any]:
    return {"schedules": services().schedules.all()}


@blueprint.get("/schedules/<schedule_id>")
def get(schedule_id: str) -> dict[str, Any]:
    return services().schedules.get(checked_schedule_id(schedule_id))


@blueprint.delete("/schedules/<schedule_id>")
def delete(schedule_id: str) -> dict[str, Any]:
    services().schedules.delete(checked_schedule_id(schedule_id))
    return {"deleted": schedule_id}


@blueprint.post("/schedules/<schedule_id>/pause")
def pause(schedule_id: str) -> dict[str, Any]:
    return services().schedules.pause(checked_schedule_id(schedule_id))


@blueprint.post("/schedules/<schedule_id>/resume")
def resume(schedule_id: str) -> dict[str, Any]:
    return services().schedules.resume(checked_schedule_id(schedule_id))
