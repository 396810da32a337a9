"""`/state`: the incremental state runs of a state key hand on (a schedule's id, or a spec's `state_key`)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, request

from collector.api.auth import caller
from collector.api.openapi_operations import problems, response
from collector.api.services import services
from collector.errors import BadRequestError
from collector.store.state import STATE_KEY, States, state_key_problem

log = logging.getLogger(__name__)

blueprint = Blueprint("state", __name__)


@blueprint.get("/state")
def get() -> dict[str, Any]:
    key, platforms = _key(), _platforms()
    return {"key": key, "states": _states().of_key(platforms, key)}


@blueprint.delete("/state")
def reset() -> dict[str, Any]:
    key, platforms = _key(), _platforms()
    done = _states().reset(platforms, key)
    log.info("state key %s reset by %s for %s", key, caller(), ", ".join(done) or "no platform (none was saved)")
    return {"key": key, "reset": done}


def _states() -> States:
    svc = services()
    return States(svc.connection, svc.store.keys)


def _key() -> str:
    """`key`: the state key (a schedule's id or a spec's `state_key`), checked."""
    key = request.args.get("key")
    if not key:
        raise BadRequestError("key is missing; call with ?key=<a schedule id or a spec's state_key>",
                              details={"key": ["missing"]})
    problem = state_key_problem(key)
    if problem is not None:
        raise BadRequestError(problem, details={"key": ["not a state key"]})
    return key


def _platforms() -> list[str]:
    """`platform_id`, when given (checked: an installed platform), else every installed platform."""
    installed = services().registry.platforms
    platform_id = request.args.get("platform_id")
    if not platform_id:
        return sorted(installed)
    if platform_id not in installed:
        raise BadRequestError(f"platform_id {platform_id[:80]!r} is not a platform; use one of {sorted(installed)}",
                              details={"platform_id": ["not a platform"]})
    return [platform_id]


def operations() -> dict[str, dict[str, Any]]:
    """The OpenAPI operations of `/state`."""
    params = [
        {"name": "key", "in": "query", "required": True,
         "description": "a schedule's id (its runs' key) or the state_key of job specs",
         "schema": {"type": "string", "pattern": STATE_KEY.pattern}},
        {"name": "platform_id", "in": "query", "required": False,
         "description": "only this platform's state (default: every platform's)", "schema": {"type": "string"}},
    ]
    saved = {"type": "object", "required": ["state", "saved_at", "job_id"], "properties": {
        "state": {"type": "object", "description": "what the run saved (ctx.save_state)"},
        "saved_at": {"type": "string"}, "job_id": {"type": "string", "description": "the run that saved it"}}}
    return {"/state": {
        "get": {
            "summary": "The incremental state the last finished run of a state key saved, per platform",
            "parameters": params,
            "responses": {"200": response("platform id → its saved state (none saved: empty)", {
                "type": "object", "required": ["key", "states"], "properties": {
                    "key": {"type": "string"},
                    "states": {"type": "object", "additionalProperties": saved}}}),
                **problems("400", "503")},
        },
        "delete": {
            "summary": "Reset a state key: its next run starts from scratch (or from cursor_start)",
            "description": "Send `X-Requested-With` (there is no body). A reset holds even while a run of the key "
                           "is running: that run's bookmark is not saved.",
            "parameters": params,
            "responses": {"200": response("the platforms whose state was forgotten", {
                "type": "object", "required": ["key", "reset"], "properties": {
                    "key": {"type": "string"}, "reset": {"type": "array", "items": {"type": "string"}}}}),
                **problems("400", "503")},
        },
    }}
