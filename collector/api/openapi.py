"""The OpenAPI 3.1 document of the API, built from the marshmallow schemas the API validates with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import INCLUDE, RAISE, Schema, fields, validate

from collector import __version__, defaults
from collector.api.limits import INT_MAX, INT_MIN
from collector.api.openapi_operations import ERROR, notify_schema, problems, response
from collector.api.openapi_operations import operations as more_operations
from collector.api.state import operations as state_operations
from collector.config import Config
from collector.specs.job import IDEMPOTENCY_KEY_MAX_CHARS
from collector.specs.notify import EVENTS
from collector.specs.registry import Registry
from collector.specs.schema import DateSetting, SecretString, StorageSetting, StrictNumber, storage_backends
from collector.store.lanes import PRIORITIES
from collector.store.records import JOB_ID
from collector.store.state import STATE_KEY
from collector.types import CONCURRENCY_KEY

OPENAPI_VERSION = "3.1.0"
# Open to anyone, so no 401: the probes carry no token; a callback link's own token is its proof.
OPEN_OPERATIONS = {("get", "/system/alive"), ("get", "/system/ready"), ("get", "/execution/callback")}


class ErrorAnswer(Schema):
    class Meta:
        unknown = RAISE

    error = fields.String(required=True, metadata={"description": "a short code: validation_error, not_found, …"})
    message = fields.String(required=True, metadata={"description": "what went wrong and how to fix it"})
    details = fields.Dict(required=True, metadata={"description": "for a 422, each field path with its messages"})


class AliveAnswer(Schema):
    alive = fields.Boolean(required=True)
    version = fields.String(required=True)


class ReadyAnswer(Schema):
    ready = fields.Boolean(required=True)
    version = fields.String(required=True)
    reason = fields.String(metadata={"description": "why this API cannot take jobs now (only when not ready)"})


class DiagnosticsAnswer(Schema):
    class Meta:
        unknown = INCLUDE

    alive = fields.Boolean(required=True)
    version = fields.String(required=True)
    healthy = fields.Boolean(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["ok", "degraded", "down"]), metadata={
        "description": "down: Redis is unreachable (503); degraded: the service works, but not all of it (see "
                       "degraded); ok otherwise"})
    degraded = fields.List(fields.String(), required=True,
                           metadata={"description": "what does not work, e.g. a platform file that failed to load"})
    platforms = fields.Dict()
    redis = fields.Dict()
    queues = fields.Dict()
    workers = fields.Dict()
    data_loss = fields.Dict(metadata={"description": "whether Redis lost its data (the run key was gone): "
                                                     "detected, noticed_at, losses"})


class SettingInfo(Schema):
    class Meta:
        unknown = INCLUDE

    name = fields.String(required=True)
    type = fields.String(required=True)
    required = fields.Boolean(required=True)
    secret = fields.Boolean(required=True)
    default = fields.Raw(allow_none=True)
    choices = fields.List(fields.Raw(allow_none=True))
    items = fields.String()
    backends = fields.Dict(keys=fields.String(), values=fields.List(fields.Dict()))


class PlatformInfo(Schema):
    id = fields.String(required=True)
    description = fields.String(required=True)
    settings = fields.List(fields.Nested(SettingInfo), required=True)
    concurrency = fields.Integer(required=True, allow_none=True, metadata={
        "description": "jobs of one concurrency key (or of the platform, for specs without one) that run at once "
                       "over every pool: the operator's cap, else the platform's CONCURRENCY; null: no cap"})
    concurrency_keys = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True, metadata={
        "description": "the operator's caps on single concurrency keys (COLLECTOR_CONCURRENCY platform:key=N)"})
    rate_limit = fields.String(required=True, allow_none=True, metadata={
        "description": "the platform's RATE_LIMIT (\"10/s\", \"600/min\", \"5000/h\"): its requests over every job "
                       "and pool; null without one"})


class ConnectionInfo(Schema):
    name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["database", "http", "files"]))
    rate_limit = fields.String(metadata={"description": "an http connection's rate_limit, when it has one"})


class PlatformsAnswer(Schema):
    platforms = fields.List(fields.Nested(PlatformInfo), required=True)
    broken = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    connections = fields.List(fields.Nested(ConnectionInfo), required=True,
                              metadata={"description": "the connections the operator named: name, kind, rate limit"})


class RunAccepted(Schema):
    job_id = fields.String(required=True, validate=validate.Regexp(JOB_ID))
    status = fields.String(required=True, validate=validate.OneOf(["queued"]))
    _id = fields.String(metadata={"description": "your reference, when the spec had one"})


class RunDeduplicated(Schema):
    job_id = fields.String(required=True, validate=validate.Regexp(JOB_ID),
                           metadata={"description": "the job the first submit of this idempotency key made"})
    status = fields.String(required=True, metadata={"description": "that job's status now"})
    deduplicated = fields.Boolean(required=True, validate=validate.Equal(True))
    duplicate_of = fields.String(required=True, metadata={"description": "the same id as job_id"})
    _id = fields.String(metadata={"description": "your reference, when the spec had one"})


class JobView(Schema):
    class Meta:
        unknown = INCLUDE  # a later version may add fields; clients must ignore the ones they do not know

    job_id = fields.String(required=True)
    status = fields.String(required=True)
    platform_id = fields.String()
    client_id = fields.String()
    settings = fields.Dict(metadata={"description": "defaults filled in; secrets as `\"***\"`"})
    progress = fields.Dict(allow_none=True)
    result = fields.Raw(allow_none=True)
    error = fields.Dict(allow_none=True)
    priority = fields.String(metadata={"description": "its lane: high, normal or low"})
    attempt = fields.Integer()
    worker = fields.String()
    created_at = fields.String()
    enqueued_at = fields.String()
    started_at = fields.String()
    ended_at = fields.String()
    stored_rows = fields.Integer()
    datasets = fields.Dict(required=True, metadata={
        "description": "each dataset's {rows, bytes} (and total_rows, truncated when cut short); with full, a page "
                       "of its rows"})
    datasets_page = fields.Dict(metadata={
        "description": "with full: offset, limit, next_offset and next (null on the last page), kept (the summary)"})
    waiting = fields.Dict(allow_none=True, metadata={
        "description": "while status is waiting: what for (input, with prompt and resume_token, or children)"})
    waiting_for = fields.String(metadata={
        "description": "while status is deferred: `concurrency` (parked until a slot of its concurrency cap frees)"})
    concurrency_key = fields.String(metadata={"description": "the spec's concurrency_key"})
    concurrency = fields.String(metadata={
        "description": "the cap its slots count under: `platform` or `platform:concurrency_key`"})
    parent_id = fields.String(metadata={"description": "the job that spawned this one"})
    state_key = fields.String(metadata={"description": "the spec's state_key: its runs hand incremental state on"})
    children = fields.List(fields.Dict(), metadata={"description": "sub-jobs: job_id, status, platform_id"})


def run_request_schema(platform_id: str, settings: type[Schema]) -> type[Schema]:
    """The body of `POST /execution/run` for one platform: the envelope `validate_spec` checks, around its settings."""
    return Schema.from_dict(
        {
            "_id": fields.Raw(metadata={"type": ["string", "integer", "null"], "description": "your reference"}),
            "platform_id": fields.String(required=True, validate=validate.OneOf([platform_id])),
            "settings": fields.Nested(settings, load_default=dict),
            "notify": fields.Raw(metadata=notify_schema(
                EVENTS, "webhooks to tell when the job finishes, fails or waits for a person")),
            "concurrency_key": fields.String(allow_none=True, validate=validate.Regexp(CONCURRENCY_KEY), metadata={
                "description": "what the platform's concurrency cap counts per (an account, a tenant): 1-64 "
                               "letters, digits or `_.@-`"}),
            "state_key": fields.Raw(metadata={
                "type": ["string", "null"], "pattern": STATE_KEY.pattern,
                "description": "runs with the same state_key hand their saved state on (incremental collection)"}),
            "priority": fields.String(validate=validate.OneOf(PRIORITIES), metadata={
                "description": "the lane workers take it from: high before normal (the default) before low; a job "
                               "waiting COLLECTOR_PRIORITY_AGE_S counts one lane higher"}),
            "idempotency_key": fields.String(validate=validate.Length(1, IDEMPOTENCY_KEY_MAX_CHARS), metadata={
                "description": "sent again with the same spec within COLLECTOR_IDEMPOTENCY_TTL_S, answers 200 with "
                               "the first job; with a different spec, 409"}),
        },
        name=f"RunRequest_{platform_id}",
    )


def _custom_fields(plugin: MarshmallowPlugin) -> None:
    assert plugin.converter is not None
    plugin.map_to_openapi_type(StrictNumber, "number", None)
    plugin.map_to_openapi_type(SecretString, "string", "password")
    plugin.map_to_openapi_type(DateSetting, "string", None)
    plugin.map_to_openapi_type(StorageSetting, "object", None)

    def setting_extras(self: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if isinstance(field, SecretString):
            ret.pop("default", None)  # a secret's default is a secret too
            extra.update(writeOnly=True, **{"x-secret": True})
        if isinstance(field, DateSetting):
            extra["description"] = "an ISO date or datetime, or 'today', 'yesterday', 'N days back', 'N weeks back'"
        if isinstance(field, StorageSetting):
            ret.pop("type", None)
            extra["oneOf"] = storage_variants() + ([{"type": "null"}] if field.allow_none else [])
            if not extra["oneOf"]:
                extra = {"not": {}, "description": "no storage backend is installed"}
        if field.allow_none and "enum" in ret and None not in ret["enum"]:
            extra["enum"] = [*ret["enum"], None]
        return extra

    plugin.converter.add_attribute_function(setting_extras)


def storage_variants() -> list[dict[str, Any]]:
    """One schema per storage backend: `{"type": <its type>, "settings": <its settings schema>}`."""
    return [
        {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
            "type": {"type": "string", "const": kind},
            "settings": {"$ref": f"#/components/schemas/Storage_{kind}"},
        }}
        for kind in sorted(storage_backends())
    ]


def _bounded(node: Any, *, max_string_chars: int) -> None:
    """Write the body limits into the request schemas: integer range, string length, no unknown fields."""
    if isinstance(node, dict):
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if "integer" in types:
            node.setdefault("minimum", INT_MIN)
            node.setdefault("maximum", INT_MAX)
        if "string" in types:
            node.setdefault("maxLength", max_string_chars)
        for value in node.values():
            _bounded(value, max_string_chars=max_string_chars)
    elif isinstance(node, list):
        for value in node:
            _bounded(value, max_string_chars=max_string_chars)


def _declare_access(path: str, method: str, operation: dict[str, Any], *, scope: str, secured: bool) -> None:
    """Write into `operation` the scope it needs, its security schemes and the 401/403 answers it may give."""
    operation["x-scope"] = scope
    refusals = []
    if method not in ("get", "head") and scope != "read":
        refusals.append("sent from another site's page (Origin, Sec-Fetch-Site: cross-site)")
        bad = operation["responses"].setdefault("400", response("the request is malformed", ERROR))
        bad["description"] += "; or neither a JSON body (Content-Type: application/json) nor X-Requested-With"
    if secured:
        schemes = [{"bearer": [scope]}]
        if path.startswith(("/rq", "/docs", "/openapi.json")):
            schemes.append({"basic": [scope]})
        operation["security"] = schemes
        operation["responses"]["401"] = response("no valid token", ERROR)
        refusals.insert(0, f"the token lacks scope {scope!r} (insufficient_scope, the scope named in details)")
        operation["description"] = (f"Needs a token with scope `{scope}`. " + operation.get("description", "")).strip()
    if refusals:
        earlier = operation["responses"].get("403", {}).get("description")
        operation["responses"]["403"] = response("; or ".join([earlier, *refusals] if earlier else refusals), ERROR)


def build_document(config: Config, registry: Registry, *, secured: bool, dashboard: bool,
                   scopes: Mapping[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """The whole document for an app with `config` and `registry`; `secured` when API tokens are set; `scopes`
    maps `(path, method)` to the scope the route needs (`auth.ROUTE_SCOPES`, as the app's routes name them)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="collector",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": (
            "A Redis-backed job executor for data collection. Request bodies: JSON objects of at most "
            f"{config.max_body_bytes} bytes, nested at most {config.max_json_depth} levels, strings of at most "
            f"{config.max_string_chars} characters, integers within `[-2**63, 2**63-1]`; no NaN or Infinity."
        )},
    )
    _custom_fields(plugin)
    for name, schema in [("Error", ErrorAnswer), ("Alive", AliveAnswer), ("Ready", ReadyAnswer),
                         ("Diagnostics", DiagnosticsAnswer),
                         ("Platforms", PlatformsAnswer), ("RunAccepted", RunAccepted),
                         ("RunDeduplicated", RunDeduplicated), ("JobView", JobView)]:
        spec.components.schema(name, schema=schema)
    for kind, backend in sorted(storage_backends().items()):
        spec.components.schema(f"Storage_{kind}", schema=backend.settings.schema_class)
    requests: dict[str, str] = {}
    for platform_id, platform in sorted(registry.platforms.items()):
        spec.components.schema(f"Settings_{platform_id}", schema=platform.settings.schema_class)
        name = f"RunRequest_{platform_id}"
        spec.components.schema(name, schema=run_request_schema(platform_id, platform.settings.schema_class))
        requests[platform_id] = f"#/components/schemas/{name}"
    paths: dict[str, dict[str, Any]] = {
        "/system/alive": {
            "get": {"summary": "Liveness; touches nothing", "security": [],
                    "responses": {"200": response("alive", {"$ref": "#/components/schemas/Alive"})}},
            "post": {"summary": "Diagnostics of Redis, queues, workers and platforms", "responses": {
                "200": response("healthy", {"$ref": "#/components/schemas/Diagnostics"}),
                "503": response("a service is down", {"$ref": "#/components/schemas/Diagnostics"})}},
        },
        "/system/ready": {
            "get": {"summary": "Readiness: whether this API can take jobs now (Redis answers)", "security": [],
                    "responses": {"200": response("ready", {"$ref": "#/components/schemas/Ready"}),
                                  "503": response("not ready; `reason` says why",
                                                  {"$ref": "#/components/schemas/Ready"})}},
        },
        "/platforms/get": {"get": {"summary": "Every platform with its settings", "responses": {
            "200": response("the platforms", {"$ref": "#/components/schemas/Platforms"})}}},
        "/execution/run": {"post": {
            "summary": "Queue a job",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [{"$ref": ref} for ref in requests.values()],
                "discriminator": {"propertyName": "platform_id", "mapping": requests},
            }}}},
            "responses": {"202": response("queued", {"$ref": "#/components/schemas/RunAccepted"}),
                          "200": response("not queued again: the job the first submit of its idempotency key made",
                                          {"$ref": "#/components/schemas/RunDeduplicated"}),
                          "409": response("its idempotency key was used for a different spec; nothing changed",
                                          ERROR),
                          **problems("400", "413", "422", "429"),
                          "503": response("Redis is unreachable or full, and nothing was written; or `not_replicated`: "
                                          "the job was written but fewer replicas than COLLECTOR_REDIS_MIN_REPLICAS "
                                          "acknowledged it in time (`details.job_id` names it: check it with "
                                          "GET /execution/get before submitting again)", ERROR)},
        }},
        "/execution/get": {"get": {
            "summary": "Everything known about a job",
            "parameters": [
                {"name": "job_id", "in": "query", "required": True,
                 "schema": {"type": "string", "pattern": JOB_ID.pattern}},
                {"name": "full", "in": "query", "required": False, "allowEmptyValue": True,
                 "description": "present (empty, 1, true, yes) to include the datasets' rows, a page at a time; "
                                "datasets_page.next links the next page",
                 "schema": {"type": "string"}},
                {"name": "offset", "in": "query", "required": False,
                 "description": "with full: the first row of each dataset to answer (default 0)",
                 "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "required": False,
                 "description": f"with full: rows of each dataset to answer (default "
                                f"{min(defaults.FULL_PAGE_ROWS, config.full_page_max_rows)})",
                 "schema": {"type": "integer", "minimum": 1, "maximum": config.full_page_max_rows}},
            ],
            "responses": {"200": response("the job", {"$ref": "#/components/schemas/JobView"}),
                          **problems("400", "404", "410", "503")},
        }},
        **more_operations({"oneOf": [{"$ref": ref} for ref in requests.values()],
                           "discriminator": {"propertyName": "platform_id", "mapping": requests}},
                          min_interval_s=config.schedule_min_interval_s),
        **state_operations(),
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": response("the OpenAPI document", {"type": "object"})}}},
        "/docs": {"get": {"summary": "Browsable API docs (served by the app, works offline)", "responses": {
            "200": response("an HTML page", {"type": "string"}, "text/html")}}},
        "/ui/": {"get": {"summary": "The console: pages to submit, follow, resume and sign off work (its pages under "
                                    "/ui/ are for browsers; with tokens set, its login page opens a session)",
                         "responses": {"302": {"description": "to the console's jobs page"}}}},
    }
    if dashboard:
        paths["/rq/"] = {"get": {"summary": "rq-dashboard: queues, workers, jobs", "responses": {
            "200": response("an HTML page", {"type": "string"}, "text/html")}}}
    if secured:
        spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "description": (
            "the secret part of a token in COLLECTOR_API_TOKENS (name:scopes:token); each operation lists the "
            "scope it needs")})
        spec.components.security_scheme("basic", {"type": "http", "scheme": "basic", "description": (
            "for browsers, on the pages under /rq and /docs only: any user name, the token as password")})
    for path, operations in paths.items():
        for method, operation in operations.items():
            if (method, path) not in OPEN_OPERATIONS:
                _declare_access(path, method, operation, scope=(scopes or {}).get((path, method), "read"),
                                secured=secured)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    if secured:
        document["security"] = [{"bearer": []}]
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        if name.startswith(("Settings_", "RunRequest_", "Storage_")):
            schema["additionalProperties"] = False  # validation refuses unknown fields
            _bounded(schema, max_string_chars=config.max_string_chars)
    return document
