"""`/platforms/get`: every discovered platform with its settings; `/platforms/check`: test a connection."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from collector.api.auth import caller
from collector.api.requests import read_json
from collector.api.services import services
from collector.specs.caps import platform_caps

blueprint = Blueprint("platforms", __name__)


@blueprint.get("/platforms/get")
def list_platforms() -> dict[str, Any]:
    svc = services()
    return {
        "platforms": [{**spec.describe(), **platform_caps(spec, svc.config)}
                      for spec in svc.registry.platforms.values()],
        "broken": svc.registry.broken,
        "connections": svc.reach.describe_connections(),  # names and kinds, never what is behind them
    }


@blueprint.post("/platforms/check")
def check() -> dict[str, Any]:
    return services().check(read_json(), by=caller())
