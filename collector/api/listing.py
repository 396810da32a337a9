"""`/execution/list`: recent jobs, newest first, paginated, from the index the service keeps."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from collector.api.services import services
from collector.errors import BadRequestError
from collector.store import index

blueprint = Blueprint("listing", __name__)


@blueprint.get("/execution/list")
def list_jobs() -> dict[str, Any]:
    args = request.args
    limit = index.parse_limit(args.get("limit"))
    status = index.parse_status(args.get("status"))
    platform_id = args.get("platform_id") or None
    if platform_id is not None and not index.PLATFORM_ID.fullmatch(platform_id):
        raise BadRequestError(
            f"platform_id {platform_id[:80]!r} is not a platform id; ids are Python module names (GET /platforms/get)",
            details={"platform_id": ["not a platform id"]},
        )
    cursor = index.Cursor.decode(args["cursor"]) if args.get("cursor") else None
    svc = services()
    return index.list_jobs(
        svc.connection, svc.store.keys, limit=limit, cursor=cursor, status=status, platform_id=platform_id
    )
