"""`/platforms/get`: every discovered platform with its settings; `/platforms/check`: test a connection."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from collector.api.execution import read_json
from collector.app import services
from collector.ratelimit import admit

blueprint = Blueprint("platforms", __name__)


@blueprint.get("/platforms/get")
def list_platforms() -> dict[str, Any]:
    svc = services()
    return {
        "platforms": [spec.describe() for spec in svc.registry.platforms.values()],
        "broken": svc.registry.broken,
        "connections": svc.reach.describe_connections(),  # names and kinds, never what is behind them
    }


@blueprint.post("/platforms/check")
def check() -> dict[str, Any]:
    from collector.checks import request_check
    from collector.jobs import validate_spec

    svc = services()
    spec = validate_spec(read_json(), svc.registry, max_timeout_s=svc.config.max_timeout_s)
    admit()
    return request_check(spec, connection=svc.connection, config=svc.config)
