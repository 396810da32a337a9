"""The OpenAPI operations beyond the seed's: cancel, events, list, checks, metrics, processes and schedules.

Request bodies are described as loosely as the endpoints check them (every rule the validation applies, no more),
so that a body the document allows is never refused for a reason the document does not state.
"""

from __future__ import annotations

from typing import Any

from collector import defaults
from collector.specs.notify import EVENTS, PROCESS_EVENTS
from collector.store.index import PLATFORM_ID, STATUSES
from collector.store.lanes import PRIORITIES
from collector.store.records import JOB_ID
from collector.workflows.processes import STATUSES as PROCESS_STATUSES
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


def notify_schema(events: tuple[str, ...], description: str) -> dict[str, Any]:
    """A `notify` list: operator connections to tell of `events` (null: none)."""
    return {"type": ["array", "null"], "maxItems": defaults.NOTIFY_MAX_TARGETS,
            "description": f'{description}: [{{"connection": "<an http connection with a secret>", "on": '
                           f"{list(events)}}}] (default: every event)".replace("'", '"'),
            "items": {"type": "object", "required": ["connection"], "additionalProperties": False,
                      "properties": {"connection": {"type": "string"},
                                     "on": {"type": "array", "minItems": 1,
                                            "items": {"type": "string", "enum": list(events)}}}}}


REASON = {"type": "string", "maxLength": 500}
NOTE = {"type": "string", "maxLength": 500, "description": "the caller's words, kept in the history"}
TASK_PARAM = {"name": "task", "in": "query", "required": True, "description": "the task's name in the definition",
              "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
STEP_PARAM = {"name": "step", "in": "query", "required": True, "description": "the step's name in the definition",
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
        "/execution/callback": {"get": {
            "summary": ("Resume a job waiting for input by a link (an identity provider's redirect): the "
                        "query is its input"),
            "description": "Needs no API token: the link's `token` (waiting.callback of GET /execution/get, or the "
                           "`callback` of a waiting notification) is the job's one-use resume token. Every other "
                           "query field becomes the input (one value as text, a repeated one as a list). Answers "
                           "JSON, or a short HTML page when the client asks for HTML.",
            "security": [],
            "parameters": [{"name": "token", "in": "query", "required": True,
                            "description": "<job id>.<resume token>; single use",
                            "schema": {"type": "string", "minLength": 3, "maxLength": 270}}],
            "responses": {"202": {"description": "queued again", "content": {
                              "application/json": {"schema": some_object("job_id", "status", "resumed")},
                              "text/html": {"schema": {"type": "string"}}}},
                          "403": response("the token is wrong or already used; nothing changed", ERROR),
                          **problems("400", "404", "409", "422", "503")},
        }},
        "/execution/retry": {"post": {
            "summary": "Queue a failed, stopped or canceled job again: a new attempt of the same id, from its last "
                       "checkpoint",
            "description": "Steps the job checkpointed do not run again; its retry budget and worker deaths start "
                           "afresh. Who retried is the token's name, recorded as `retried_by`. Send "
                           "`X-Requested-With` (there is no body).",
            "parameters": [job_id],
            "responses": {"202": response("queued again", some_object("job_id", "status", "previous")),
                          **problems("400", "404", "409", "503")},
        }},
        "/execution/events": {"get": {
            "summary": "The job's events: status changes, retries, the platform's log lines and own events (capped)",
            "parameters": [job_id, query("after", {"type": "string", "pattern": r"^[0-9]{1,20}-[0-9]{1,20}$"},
                                         "only the events after this event id (to follow a job)")],
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
                "notify": notify_schema(PROCESS_EVENTS, "webhooks told of step changes, manual tasks waiting for "
                                                        "sign-off and the process's end"),
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
            "summary": "Run a task of the open step again (one that came to ok or fail), as a new attempt",
            "parameters": [process_id, TASK_PARAM],
            "description": "Who asks is the token's name, recorded as `by` in the history.",
            "requestBody": json_body({"type": "object", "additionalProperties": False, "properties": {
                "note": NOTE, "by": {**NOTE, "deprecated": True, "description": "older name of note"}}},
                required=False),
            "responses": {"200": response("the process, the task queued again", some_object("process_id", "status")),
                          **problems("400", "404", "409", "413", "422", "503")},
        }},
        "/process/finalize": {"post": {
            "summary": "Close the open step by hand: OK skips its failed tasks and moves on, FAIL fails the process",
            "parameters": [process_id, STEP_PARAM],
            "description": "OK needs every task of the step to have an outcome; FAIL cancels the tasks still running "
                           "or waiting. Who finalizes is the token's name, recorded as `finalized_by`.",
            "requestBody": json_body({"type": "object", "required": ["result"], "additionalProperties": False,
                                      "properties": {
                "result": {"type": "string", "enum": ["OK", "FAIL"]},
                "reason": {"type": "string"}, "note": NOTE}}),
            "responses": {"200": response("the process after the step was finalized",
                                          some_object("process_id", "status")),
                          **problems("400", "404", "409", "413", "422", "503")},
        }},
        "/process/list": {"get": {
            "summary": "Processes, newest first, a page at a time",
            "parameters": [
                query("status", {"type": "string", "enum": ["", *PROCESS_STATUSES]}, "only processes in this status"),
                query("name", {"type": "string", "maxLength": 200}, "only processes of this definition name"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": defaults.LIST_MAX_LIMIT},
                      f"processes per page (default {defaults.LIST_LIMIT})"),
                query("cursor", {"type": "string"}, "next_cursor of the previous page")],
            "responses": {"200": response("a page of processes", {
                "type": "object", "required": ["processes", "next_cursor"],
                "properties": {"processes": {"type": "array", "items": some_object("process_id", "name", "status")},
                               "next_cursor": {"type": ["string", "null"]}}}),
                **problems("400", "503")},
        }},
        "/inbox": {"get": {
            "summary": "Everything waiting for a person, oldest first: jobs waiting for input, manual tasks waiting "
                       "for sign-off, steps blocked on failed tasks",
            "responses": {"200": response("the items, each with its kind, what to call and the scope it needs", {
                "type": "object", "required": ["items", "count", "truncated"],
                "properties": {"items": {"type": "array", "items": some_object("kind", "since", "action", "scope")},
                               "count": {"type": "integer"}, "truncated": {"type": "boolean"}}}),
                **problems("503")},
        }},
        "/execution/stream": {"get": {
            "summary": "Server-sent events of jobs: status, progress and (for one job) its events as they happen",
            "description": "`event: status`, `progress` and `event` messages, each JSON with its `job_id`, then "
                           "`event: end` with a `reason`: `ended` once every job has ended, `time limit` after "
                           "COLLECTOR_STREAM_MAX_S (reconnect to go on). At most half of COLLECTOR_HTTP_THREADS "
                           "streams run at once per API process (503 past that).",
            "parameters": [{"name": "job_id", "in": "query", "required": True, "style": "form", "explode": True,
                            "description": "a job id; repeat it (up to 100) to watch several jobs",
                            "schema": {"type": "array", "minItems": 1, "maxItems": 100,
                                       "items": {"type": "string", "pattern": JOB_ID.pattern}}}],
            "responses": {"200": response("the event stream", {"type": "string"}, "text/event-stream"),
                          **problems("400", "404", "410", "503")},
        }},
        "/schedules": {
            "post": {
                "summary": "Run a job spec on a cron expression or every interval_s seconds",
                "requestBody": json_body({"type": "object", "required": ["spec"], "additionalProperties": False,
                                          "properties": {
                    "spec": run_request, "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "cron": {"type": "string", "description": "five fields, e.g. '*/15 * * * *' (UTC)"},
                    "interval_s": {"type": "integer", "minimum": min_interval_s, "maximum": MAX_INTERVAL_S},
                    "notify": notify_schema(EVENTS, "webhooks of every job the schedule makes"),
                    "priority": {"type": "string", "enum": list(PRIORITIES),
                                 "description": "the priority of every job the schedule makes (over the spec's)"}}}),
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
        "/schedules/{schedule_id}/pause": {"post": {
            "summary": "Stop firing a schedule until it is resumed (a paused schedule has no next_run_at)",
            "parameters": [schedule_id],
            "responses": {"200": response("the paused schedule", some_object("id", "paused")),
                          **problems("400", "404", "503")}}},
        "/schedules/{schedule_id}/resume": {"post": {
            "summary": "Fire a paused schedule again; its next run is computed from now (the next cron time, or one "
                       "interval from now), ticks missed while paused are not run",
            "parameters": [schedule_id],
            "responses": {"200": response("the schedule", some_object("id", "paused")),
                          **problems("400", "404", "503")}}},
    }
