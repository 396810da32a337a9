"""Submitting jobs: validate a spec against its platform, seal its secrets, write the record and enqueue."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

import redis
from marshmallow import ValidationError as MarshmallowError
from rq import Queue
from rq.serializers import JSONSerializer

from collector import index, metrics
from collector.config import Config
from collector.errors import ConfigError, ServiceUnavailableError, SettingError, ValidationError
from collector.masking import MASK, mask_url
from collector.policy import RetryPolicy, check_retry, check_timeout
from collector.registry import PlatformSpec, Registry, storage_backends
from collector.schema import flatten_errors
from collector.sealing import Sealer
from collector.state import JobStore, utcnow

SPEC_FIELDS = {"_id", "platform_id", "settings", "retry", "timeout_s"}
RUN_FUNCTION = "collector.runner.run_job"


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A validated job spec: the platform, the settings as given (defaults filled) and the client's id."""

    platform: PlatformSpec
    settings: dict[str, Any]
    client_id: str | None
    retry: dict[str, Any] | None = None
    timeout_s: int | None = None


def validate_spec(body: Any, registry: Registry) -> JobSpec:
    """Check a job spec; `ValidationError` lists every problem at once, each under its field path."""
    if not isinstance(body, dict):
        raise ValidationError(
            f"the job spec must be a JSON object, not {type(body).__name__}",
            details={"_schema": ['send {"platform_id": ..., "settings": {...}}']},
        )
    errors: dict[str, list[str]] = {}
    for key in sorted(set(body) - SPEC_FIELDS):
        errors[key] = [f"Unknown field; a job spec has only {sorted(SPEC_FIELDS)}."]
    client_id = body.get("_id")
    if client_id is not None and (not isinstance(client_id, str | int) or isinstance(client_id, bool)):
        errors["_id"] = ["give your reference as a string"]
    platform_id = body.get("platform_id")
    platform = registry.get(platform_id) if isinstance(platform_id, str) else None
    if platform_id is None:
        errors["platform_id"] = [f"Missing data for required field; one of {sorted(registry.platforms)}."]
    elif platform is None:
        errors["platform_id"] = [f"{platform_id!r} is not a platform; use one of {sorted(registry.platforms)}."]
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        errors["settings"] = ["give the settings as a JSON object"]
    elif platform is not None:
        try:
            loaded = platform.settings.schema().load(settings)
        except MarshmallowError as exc:
            errors.update(flatten_errors(exc.messages, "settings"))
        else:
            # Rules that span settings live in `__init__` (which does no I/O): check them before queueing.
            try:
                platform.cls(**loaded)
            except SettingError as exc:
                errors[f"settings.{exc.setting}"] = [exc.message]
            except (ValueError, TypeError) as exc:
                errors["settings"] = [f"{exc}"]
    if body.get("retry") is not None:
        errors.update(check_retry(body["retry"]))
    if body.get("timeout_s") is not None:
        errors.update(check_timeout(body["timeout_s"]))
    if errors or platform is None:
        raise ValidationError(
            f"the job spec has {len(errors)} error(s); fix the fields named in details and send it again",
            details=errors,
        )
    return JobSpec(
        platform,
        {**platform.settings.defaults, **settings},
        None if client_id is None else str(client_id),
        retry=body.get("retry"),
        timeout_s=body.get("timeout_s"),
    )


def secret_paths(spec: JobSpec) -> list[tuple[str, ...]]:
    """Where secrets sit in a spec's settings: secret settings and the secret settings of storage specs."""
    paths: list[tuple[str, ...]] = []
    backends = storage_backends()
    for setting in spec.platform.settings.settings:
        value = spec.settings.get(setting.name)
        if value is None:
            continue
        if setting.secret:
            paths.append((setting.name,))
        elif setting.type == "storage" and isinstance(value, dict) and value.get("type") in backends:
            for sub in backends[value["type"]].settings.secret_names():
                if value.get("settings", {}).get(sub) is not None:
                    paths.append((setting.name, "settings", sub))
    return paths


def split_secrets(spec: JobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings with secrets masked, and the secrets by dotted path (to be sealed)."""
    masked = copy.deepcopy(spec.settings)
    secrets: dict[str, Any] = {}
    for path in secret_paths(spec):
        parent = masked
        for part in path[:-1]:
            parent = parent[part]
        secrets[".".join(path)] = parent[path[-1]]
        parent[path[-1]] = MASK
    return masked, secrets


def merge_secrets(masked: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `split_secrets`: the settings with their secret values back in place."""
    settings = copy.deepcopy(masked)
    for dotted, value in secrets.items():
        parent = settings
        *parents, last = dotted.split(".")
        for part in parents:
            parent = parent[part]
        parent[last] = value
    return settings


class Submitter:
    """What `POST /execution/run` calls: validates, seals, writes the record and enqueues in one transaction."""

    def __init__(self, *, connection: redis.Redis, config: Config, registry: Registry) -> None:
        self.connection = connection
        self.config = config
        self.registry = registry
        self.store = JobStore(connection, config)
        self.queue = Queue(config.queue_name, connection=connection, serializer=JSONSerializer)
        self.sealer = Sealer(config.secret_key) if config.secret_key else None

    def submit(
        self, body: Any, *, job_id: str | None = None, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Queue the job `body` describes. `job_id` and `extra` record fields are for collector's own
        submitters (schedules, processes), never taken from a request."""
        spec = validate_spec(body, self.registry)
        job_id = job_id or uuid.uuid4().hex
        fields = new_record(spec, self.sealer, no_key=(
            f"platform {spec.platform.id!r} was given secrets but this service has no "
            "COLLECTOR_SECRET_KEY to seal them with; set it (the same value for API and workers)"
        ))
        policy = RetryPolicy.resolve(spec.retry, self.config)
        timeout = spec.timeout_s or spec.platform.timeout_s or self.config.job_timeout_s
        fields.update(retry=policy.to_dict(), max_attempts=policy.max_attempts, timeout_s=timeout)
        fields.update(extra or {})
        try:
            with self.connection.pipeline(transaction=True) as pipe:
                pipe.multi()  # explicit, or RQ would call multi() after our first command
                self.store.create(job_id, fields, pipe)
                self.store.event(job_id, "queued", pipe, platform_id=spec.platform.id)
                index.add(pipe, self.store.keys, self.config, job_id)
                metrics.job_submitted(pipe, self.store.keys, job_id=job_id, platform_id=spec.platform.id)
                self.queue.enqueue_call(
                    RUN_FUNCTION,
                    job_id=job_id,
                    timeout=timeout,
                    description=f"{spec.platform.id} job",
                    result_ttl=self.config.record_ttl_s,
                    failure_ttl=self.config.failed_record_ttl_s,
                    pipeline=pipe,
                )
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise redis_down(self.config, exc) from None
        answer: dict[str, Any] = {"job_id": job_id, "status": "queued"}
        if spec.client_id is not None:
            answer["_id"] = spec.client_id
        return answer


def new_record(spec: JobSpec, sealer: Sealer | None, *, no_key: str) -> dict[str, Any]:
    """The fields a new job record starts with: `queued`, the settings masked, the secrets sealed
    (`ConfigError(no_key)` when there are secrets and no `sealer`)."""
    masked, secrets = split_secrets(spec)
    now = utcnow()
    fields: dict[str, Any] = {
        "status": "queued",
        "platform_id": spec.platform.id,
        "settings": masked,
        "created_at": now,
        "enqueued_at": now,
        "attempt": 0,
    }
    if spec.client_id is not None:
        fields["client_id"] = spec.client_id
    if secrets:
        if sealer is None:
            raise ConfigError(no_key)
        fields["secrets"] = sealer.seal(secrets)
    return fields


def redis_down(config: Config, exc: Exception) -> ServiceUnavailableError:
    where = mask_url(config.redis_url or "the configured Redis")
    return ServiceUnavailableError(
        f"Redis at {where} is unreachable ({type(exc).__name__}); nothing was written. "
        "Check that Redis runs and COLLECTOR_REDIS_URL points to it, then retry.",
        details={"service": "redis"},
    )
