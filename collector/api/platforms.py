"""`/platforms/get`: every discovered platform with its settings; `/platforms/check`: test a connection."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from collector.api.requests import read_json
from collector.api.services import services

blueprint = Blueprint("platforms", __name__)


@blueprint.get("/platforms/get")
def list_platforms() -> dict[str, Any]:
    registry = services().registry
    return {
        "platforms": [spec.describe() for spec in registry.platforms.values()],
        "broken": registry.broken,
    }


@blueprint.post("/platforms/check")
def check() -> dict[str, Any]:
    return services().check(read_json())
