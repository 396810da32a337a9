"""`/execution/run`, `get`, `cancel`, `resume` and `events`: submit a job, read what is known about it, cancel it,
resume one that waits for input."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request

from collector import defaults
from collector.app import services
from collector.auth import caller
from collector.errors import BadRequestError, CollectorError, NotFoundError, ValidationError
from collector.limits import parse_body
from collector.masking import forget, mask_error, remember, secrets_in_body
from collector.ratelimit import admit
from collector.state import JOB_ID

log = logging.getLogger(__name__)
blueprint = Blueprint("execution", __name__)
TRUE_WORDS = {"", "1", "true", "yes"}


@blueprint.post("/execution/run")
def run() -> tuple[dict[str, Any], int]:
    body = read_json()
    secrets = remember(secrets_in_body(body, services().registry))  # masked in every log line meanwhile
    try:
        answer = services().submitter.submit(body, admit=admit)
    except CollectorError as exc:  # a validation message may quote a value given for a secret setting
        raise mask_error(exc, secrets) from None
    except Exception as exc:  # logged here, while the secrets are still masked, not by the app's handler
        log.exception("submitting a job failed unexpectedly")
        raise CollectorError(
            f"the service failed unexpectedly ({type(exc).__name__}); the logs have the details"
        ) from None
    finally:
        forget(secrets)
    return answer, 202


@blueprint.get("/execution/get")
def get() -> dict[str, Any]:
    job_id = job_id_param()
    full = "full" in request.args and request.args["full"].lower() in TRUE_WORDS
    svc = services()
    offset, limit = page_params(full, svc.config.full_page_max_rows)
    view = svc.store.view(job_id, full=full, offset=offset, limit=limit)
    if view is None:
        raise NotFoundError(
            f"no job {job_id!r}: it never existed or its record expired; check the id POST /execution/run gave",
            details={"job_id": job_id},
        )
    if full:
        page = view["datasets_page"]
        page["next"] = (None if page["next_offset"] is None else
                        f"/execution/get?job_id={job_id}&full=1&offset={page['next_offset']}&limit={limit}")
    from collector.waiting import describe

    return describe(svc.connection, svc.config, view)


def page_params(full: bool, max_limit: int) -> tuple[int, int]:
    """`offset` and `limit` of a `full` answer: which rows of each dataset it holds."""
    given = {name: request.args[name] for name in ("offset", "limit") if name in request.args}
    if given and not full:
        raise BadRequestError("offset and limit page the datasets' rows; add full to the query, or leave them out",
                              details={name: ["only with full"] for name in given})
    errors: dict[str, list[str]] = {}
    offset = _whole(given.get("offset", "0"))
    if offset is None or offset < 0:
        errors["offset"] = ["a whole number from 0: the first row of each dataset to answer"]
    limit = _whole(given.get("limit", str(min(defaults.FULL_PAGE_ROWS, max_limit))))
    if limit is None or not 1 <= limit <= max_limit:
        errors["limit"] = [f"a whole number from 1 to {max_limit} (COLLECTOR_FULL_PAGE_MAX_ROWS): rows per dataset"]
    if errors:
        shown = ", ".join(f"{name}={given.get(name, '')[:20]!r}" for name in errors)
        raise BadRequestError(f"{shown}: {'; '.join(f'{n} must be {m[0]}' for n, m in errors.items())}",
                              details=errors)
    return offset or 0, limit or 1


def _whole(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


@blueprint.post("/execution/resume")
def resume() -> tuple[dict[str, Any], int]:
    from collector.waiting import input_secrets
    from collector.waiting import resume as resume_job

    job_id = job_id_param()
    body = read_json()
    if not isinstance(body, dict):
        raise ValidationError(
            'the body must be a JSON object: {"token": "<waiting.resume_token of GET /execution/get>", '
            '"input": {...}}', details={"_schema": ["send a JSON object"]},
        )
    errors: dict[str, list[str]] = {}
    for key in sorted(set(body) - {"token", "input"}):
        errors[key] = ['Unknown field; a resume has only "token" and "input".']
    token = body.get("token")
    if not isinstance(token, str) or not token:
        errors["token"] = ["give the resume token (waiting.resume_token of GET /execution/get) as a string"]
    elif len(token) > 200:
        errors["token"] = [f"a resume token has 43 characters, not {len(token)}"]
    given = body.get("input", {})
    if not isinstance(given, dict):
        errors["input"] = ["give the input as a JSON object, e.g. {\"code\": \"...\"}"]
    if errors:
        raise ValidationError(
            f"the resume has {len(errors)} error(s); fix the fields named in details and send it again",
            details=errors,
        )
    svc = services()
    secrets = remember(input_secrets(given))  # inputs may be secret: masked in every log line meanwhile
    try:
        answer = resume_job(svc.connection, svc.config, job_id, token=token, given=given, by=caller())
    finally:
        forget(secrets)
    return answer, 202


@blueprint.post("/execution/cancel")
def cancel() -> tuple[dict[str, Any], int]:
    from collector.control import cancel as cancel_job

    job_id = job_id_param()
    reason = cancel_reason()
    svc = services()
    answer = cancel_job(svc.connection, svc.config, job_id, by=caller(), reason=reason)
    return answer, 200 if answer["status"] == "canceled" else 202


# Who cancels is the API token's name; what the caller writes is a reason. Older clients wrote a name under
# `canceled_by` or `by`: it is kept, as the reason.
REASON_NAMES = ("reason", "canceled_by", "by")
REASON_MAX_CHARS = 500


def cancel_reason() -> str | None:
    """The caller's reason for a cancel, from the query or an optional JSON body."""
    given = {name: request.args[name] for name in REASON_NAMES if name in request.args}
    if request.content_length:
        body = read_json()
        if not isinstance(body, dict) or any(not isinstance(body.get(name, ""), str) for name in REASON_NAMES):
            raise BadRequestError('the body must be a JSON object like {"reason": "wrong dates"} (or leave it out)')
        given.update({name: body[name] for name in REASON_NAMES if name in body})
    too_long = sorted(name for name, text in given.items() if len(text) > REASON_MAX_CHARS)
    if too_long:
        raise BadRequestError(f"{too_long[0]} is {len(given[too_long[0]])} characters; give at most {REASON_MAX_CHARS}",
                              details={name: [f"at most {REASON_MAX_CHARS} characters"] for name in too_long})
    return next((given[name] for name in REASON_NAMES if given.get(name)), None)


@blueprint.get("/execution/events")
def events() -> Any:
    svc = services()
    job_id = job_id_param()
    found = svc.store.events(job_id)
    if not found and not svc.store.exists(job_id):
        raise NotFoundError(
            f"no job {job_id!r}: it never existed or its record expired; check the id POST /execution/run gave",
            details={"job_id": job_id},
        )
    return jsonify(found)


def job_id_param() -> str:
    job_id = request.args.get("job_id")
    if not job_id:
        raise BadRequestError("job_id is missing; call with ?job_id=<the id POST /execution/run answered>")
    if not JOB_ID.fullmatch(job_id):
        raise BadRequestError(
            f"job_id {job_id[:80]!r} is not a job id; ids are 1-64 letters, digits, '-' or '_'",
            details={"job_id": ["not a job id"]},
        )
    return job_id


def read_json() -> Any:
    """The request body as JSON; a clear 400 when it is not JSON or breaks a limit (depth, numbers, strings)."""
    if request.mimetype != "application/json":
        raise BadRequestError(
            f"the body must be JSON sent with Content-Type: application/json (got {request.mimetype or 'none'!r})"
        )
    config = services().config
    raw = request.get_data(cache=False)
    return parse_body(raw, max_depth=config.max_json_depth, max_string_chars=config.max_string_chars)
