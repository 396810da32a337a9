"""The OpenAPI operations beyond the seed's: cancel, events, list, checks, metrics, processes and schedules.

Request bodies are described as loosely as the endpoints check them (every rule the validation applies, no more),
so that a body the document allows is never refused for a reason the document does not state.
"""

from __future__ import annotations

from typing import Any

from collector import defaults
from collector.store.index import PLATFORM_ID, STATUSES
from collector.store.records import JOB_ID
from collector.workflows.schedules import MAX_INTERVAL_S

ERROR = {"$ref": "#/components/schemas/Error"}
PROBLEMS = {
    "400": "the request is malformed: not JSON, a limit broken, a bad parameter",
    "404": "no such job, process, task or schedule",
    "409": "the request does not fit the current state (named in the message)",
    "410": "the job existed but its record was lost with Redis data (a loss was noticed since it was created)",
    "413": "the body is too large",
    "422": "field errors, each under its path",
    "429": "the caller submitted too often (COLLECTOR_SUBMITS_PER_MINUTE); Retry-After says when to try again",
    "503": "Redis is unreachable; nothing was written",
    "504": "no worker answered in time",
}


def response(description: str, schema: Any = None, media: str = "application/json") -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


def problems(*codes: str) -> dict[str, Any]:
    return {code: response(PROBLEMS[code], ERROR) for code in codes}


def id_param(name: str, where: str = "query", description: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": True, "description": description,
            "schema": {"type": "string", "pattern": JOB_ID.pattern}}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def some_object(*required: str) -> dict[str, Any]:
    return {"type": "object", "required": list(required)}


REASON = {"type": "string", "maxLength": 500}
NOTE = {"type": "string", "maxLength": 500, "description": "the caller's words, kept in the history"}
TASK_PARAM = {"name": "task", "in": "query", "required": True, "description": "the task's name in the definition",
              "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
JOB_LINK = "the id POST /execution/run answered"


def operations(run_request: dict[str, Any], *, min_interval_s: int) -> dict[str, dict[str, Any]]:
    """Paths and their operations; `run_request` is the schema of a job spec (the body of `/execution/run`),
    `min_interval_s` the shortest schedule interval the service allows."""
    job_id = id_param("job_id", description=JOB_LINK)
    process_id = id_param("process_id", description="the id POST /process/run answered")
    schedule_id = id_param("schedule_id", "path", "the id POST /schedules answered")
    return {
        "/execution/cancel": {"post": {
            "summary": "Cancel a job: a queued one at once, a running one at its next progress call",
            "description": "Who cancels is the token's name (`anonymous` when the API is open), recorded as "
                           "`canceled_by`; the caller's `reason` is recorded as `cancel_reason`.",
            "parameters": [job_id, query("reason", REASON, "why (kept on the record as cancel_reason)"),
                           {**query("canceled_by", REASON, "older name of reason"), "deprecated": True},
                           {**query("by", REASON, "older name of reason"), "deprecated": True}],
            "requestBody": json_body({"type": "object", "properties": {
                "reason": REASON,
                "canceled_by": {**REASON, "deprecated": True, "description": "older name of reason"},
                "by": {**REASON, "deprecated": True, "description": "older name of reason"}}}, required=False),
            "responses": {"200": response("canceled", some_object("job_id", "status")),
                          "202": response("cancel requested; the job stops soon", some_object("job_id", "status")),
                          **problems("400", "404", "409", "413", "503")},
        }},
        "/execution/resume": {"post": {
            "summary": "Deliver the input a waiting job asked for (ctx.wait_for) and queue it again",
            "parameters": [job_id],
            "requestBody": json_body({"type": "object", "required": ["token"], "additionalProperties": False,
                                      "properties": {
                "token": {"type": "string", "minLength": 1, "maxLength": 200,
                          "description": "waiting.resume_token of GET /execution/get; single use"},
                "input": {"type": "object", "description": "what the job waits for; sealed, never shown"}}}),
            "responses": {"202": response("queued again", some_object("job_id", "status", "resumed")),
                          "403": response("the token is wrong or already used; nothing changed", ERROR),
                          **problems("400", "404", "409", "413", "422", "503")},
        }},
        "/execution/events": {"get": {
            "summary": "The job's events: status changes, retries, the platform's log lines (capped)",
            "parameters": [job_id],
            "responses": {"200": response("the events, oldest first", {"type": "array", "items": {"type": "object"}}),
                          **problems("400", "404", "410", "503")},
        }},
        "/execution/list": {"get": {
            "summary": "Recent jobs, newest first, paginated",
            "parameters": [
                query("status", {"type": "string", "enum": ["", *STATUSES]}, "only jobs in this status"),
                query("platform_id", {"type": "string", "pattern": f"^({PLATFORM_ID.pattern[1:-1]})?$"},
                      "only jobs of this platform"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": defaults.LIST_MAX_LIMIT},
                      f"jobs per page (default {defaults.LIST_LIMIT})"),
                query("cursor", {"type": "string"}, "the next_cursor of the previous page"),
            ],
            "responses": {"200": response("a page of jobs", {
                "type": "object", "required": ["jobs", "next_cursor"], "properties": {
                    "jobs": {"type": "array", "items": some_object("job_id")},
                    "next_cursor": {"type": ["string", "null"]}}}),
                **problems("400", "503")},
        }},
        "/platforms/check": {"post": {
            "summary": "Have a worker test a platform's connection with these settings; nothing is collected",
            "requestBody": json_body(run_request),
            "responses": {"200": response("the checks' outcome", some_object()),
                          **problems("400", "413", "422", "429", "503", "504")},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics: job counts and durations by platform, queue depth, workers, Redis",
            "responses": {"200": response("Prometheus text format", {"type": "string"}, "text/plain")},
        }},
        "/process/run": {"post": {
            "summary": "Start a step process: ordered steps of platform tasks and manual sign-offs",
            "requestBody": json_body({"type": "object", "required": ["name", "steps"], "additionalProperties": False,
                                      "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "version": {"type": ["string", "integer"]},
                "steps": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "tasks"], "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "tasks": {"type": "array", "minItems": 1, "items": {"type": "object"}}}}}}}),
            "responses": {"201": response("started", some_object("process_id", "status")),
                          **problems("400", "413", "422", "429", "503")},
        }},
        "/process/get": {"get": {
            "summary": "A process: its steps, tasks, statuses and history",
            "parameters": [process_id],
            "responses": {"200": response("the process", some_object("process_id", "status")),
                          **problems("400", "404", "503")},
        }},
        "/process/ack": {"post": {
            "summary": "A person's OK or FAIL for a manual task (or to override a platform task's result)",
            "parameters": [process_id, TASK_PARAM],
            "description": "Who signs off is the token's name (`anonymous` when the API is open), recorded as `by`.",
            "requestBody": json_body({"type": "object", "required": ["result"], "additionalProperties": False,
                                      "properties": {
                "result": {"type": "string", "enum": ["OK", "FAIL"]},
                "reason": {"type": "string", "description": "why; required with FAIL"},
                "note": NOTE,
                "by": {**NOTE, "deprecated": True, "description": "older name of note (not who signs off)"}}}),
            "responses": {"200": response("the process after the acknowledgement", some_object("process_id", "status")),
                          **problems("400", "404", "409", "413", "422", "503")},
        }},
        "/process/rerun": {"post": {
            "summary": "Run a failed task again while its step is open",
            "parameters": [process_id, TASK_PARAM],
            "description": "Who asks is the token's name, recorded as `by` in the history.",
            "requestBody": json_body({"type": "object", "additionalProperties": False, "properties": {
                "note": NOTE, "by": {**NOTE, "deprecated": True, "description": "older name of note"}}},
                required=False),
            "responses": {"200": response("the process, the task queued again", some_object("process_id", "status")),
                          **problems("400", "404", "409", "413", "422", "503")},
        }},
        "/schedules": {
            "post": {
                "summary": "Run a job spec on a cron expression or every interval_s seconds",
                "requestBody": json_body({"type": "object", "required": ["spec"], "additionalProperties": False,
                                          "properties": {
                    "spec": run_request, "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "cron": {"type": "string", "description": "five fields, e.g. '*/15 * * * *' (UTC)"},
                    "interval_s": {"type": "integer", "minimum": min_interval_s, "maximum": MAX_INTERVAL_S}}}),
                "responses": {"201": response("the schedule", some_object("id", "next_run_at")),
                              "409": response("the service holds COLLECTOR_MAX_SCHEDULES schedules already", ERROR),
                              **problems("400", "413", "422", "429", "503")},
            },
            "get": {
                "summary": "Every schedule with its next run",
                "responses": {"200": response("the schedules", {
                    "type": "object", "required": ["schedules"],
                    "properties": {"schedules": {"type": "array", "items": some_object("id")}}}),
                    **problems("503")},
            },
        },
        "/schedules/{schedule_id}": {
            "get": {"summary": "One schedule", "parameters": [schedule_id],
                    "responses": {"200": response("the schedule", some_object("id")),
                                  **problems("400", "404", "503")}},
            "delete": {"summary": "Stop and forget a schedule (jobs it queued are kept)", "parameters": [schedule_id],
                       "responses": {"200": response("deleted", some_object("deleted")),
                                     **problems("400", "404", "503")}},
        },
    }
