"""`/execution/list`: recent jobs, newest first, paginated, from the index the service keeps."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from collector.api.requests import list_query
from collector.api.services import services

blueprint = Blueprint("listing", __name__)


@blueprint.get("/execution/list")
def list_jobs() -> dict[str, Any]:
    return services().list_jobs(**list_query())
