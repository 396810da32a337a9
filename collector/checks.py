"""Connection checks: a platform's optional `_check()` and its storage targets' `_check()`, run without
collecting anything — in this process (`collector check`) or in a worker (`POST /platforms/check`)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import redis
from rq import Queue, get_current_job
from rq.serializers import JSONSerializer

from collector import reach
from collector.config import Config
from collector.errors import CheckTimeoutError, CollectorError, ConfigError
from collector.jobs import JobSpec, merge_secrets, secret_values, split_secrets
from collector.masking import mask_text
from collector.registry import PlatformSpec, Registry
from collector.sealing import Sealer
from collector.state import Keys, encode
from storage.base import Storage

log = logging.getLogger(__name__)

CHECK_FUNCTION = "collector.checks.run_check"
WAIT_SLICE_S = 1.0   # each BLPOP waits at most this long: below any client read timeout


def _entry(name: str, ok: bool | None, message: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "message": message}


def _one(name: str, target: Any, secrets: list[str]) -> dict[str, Any]:
    """Run `target._check()`: ok with its note, failed with its (masked) reason, or None when it has none."""
    check = getattr(type(target), "_check", None)
    if check is None or check is Storage._check:
        return _entry(name, None, "no check")
    try:
        note = target._check()
    except Exception as exc:
        return _entry(name, False, mask_text(f"{type(exc).__name__}: {exc}", secrets))
    return _entry(name, True, mask_text(str(note or "ok"), secrets))


def check_settings(platform: PlatformSpec, settings: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """Build the platform from `settings` (secrets in place) and run every check it and its storage have.

    Never raises for what it tests: the answer is `{"ok", "message", "checks": [{"name", "ok", "message"}]}`,
    where a check's `ok` is None when that part has nothing to test.
    """
    secrets = [*secrets, *reach.current().secrets()]  # an operator connection's secrets are never shown either
    try:
        kwargs = platform.settings.schema().load(settings)
        instance = platform.cls(**kwargs)
    except Exception as exc:  # a bad value or an __init__ that raises: both are the check's answer
        reason = mask_text(f"{type(exc).__name__}: {exc}", secrets)
        return {"ok": False, "message": f"platform {platform.id!r} could not be built: {reason}", "checks": []}
    checks = [
        _one(f"{name} ({value.describe()})", value, secrets)
        for name, value in kwargs.items() if isinstance(value, Storage)
    ]
    checks.append(_one(f"platform {platform.id}", instance, secrets))
    failed = [c for c in checks if c["ok"] is False]
    tested = [c for c in checks if c["ok"] is not None]
    if failed:
        message = "; ".join(f"{c['name']}: {c['message']}" for c in failed)
    elif tested:
        message = "; ".join(f"{c['name']}: {c['message']}" for c in tested)
    else:
        message = f"platform {platform.id!r} and its storage have no _check: nothing was tested"
    return {"ok": not failed, "message": message, "checks": checks}


def check_spec_locally(spec: JobSpec) -> dict[str, Any]:
    """`collector check`: the checks of a validated spec, in this process."""
    secrets = secret_values(split_secrets(spec)[1])
    return check_settings(spec.platform, spec.settings, secrets)


def request_check(
    spec: JobSpec, *, connection: redis.Redis, config: Config, timeout_s: float | None = None
) -> dict[str, Any]:
    """`POST /platforms/check`: have a worker run the checks and wait for its answer until the deadline.

    The settings travel as a job's do (secrets sealed) in a record that expires shortly after the deadline.
    """
    timeout_s = timeout_s or config.check_timeout_s
    keys = Keys(config.key_prefix)
    masked, secrets = split_secrets(spec)
    check_id = f"check-{uuid.uuid4().hex}"
    fields: dict[str, Any] = {"platform_id": spec.platform.id, "settings": masked}
    if secrets:
        if not config.secret_key:
            raise ConfigError(
                f"platform {spec.platform.id!r} was given secrets but this service has no "
                "COLLECTOR_SECRET_KEY to seal them with; set it (the same value for API and workers)"
            )
        fields["secrets"] = Sealer(config.secret_key).seal(secrets)
    linger_s = int(timeout_s) + 5
    queue = Queue(config.queue_name, connection=connection, serializer=JSONSerializer)
    with connection.pipeline(transaction=True) as pipe:
        pipe.multi()
        pipe.hset(keys.check(check_id), mapping=encode(fields))
        pipe.expire(keys.check(check_id), linger_s)
        # At the front: a check is short and someone waits for it. `ttl`: never run once nobody waits.
        queue.enqueue_call(
            CHECK_FUNCTION, job_id=check_id, timeout=linger_s, ttl=linger_s, result_ttl=linger_s,
            failure_ttl=linger_s, description=f"{spec.platform.id} connection check", at_front=True, pipeline=pipe,
        )
        pipe.execute()
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        popped = connection.blpop([keys.check_answer(check_id)], timeout=max(0.01, min(WAIT_SLICE_S, left)))
        if popped is not None:
            return json.loads(popped[1])
    connection.delete(keys.check(check_id))  # a worker that takes it late finds nothing to run
    raise CheckTimeoutError(
        f"no worker answered the check of {spec.platform.id!r} within {timeout_s:g} s; are workers running and "
        "idle? (POST /system/alive lists them; start some with `collector worker`, or raise "
        "COLLECTOR_CHECK_TIMEOUT_S)",
        details={"timeout_s": timeout_s},
    )


def run_check() -> dict[str, Any]:
    """What a worker runs for `POST /platforms/check` (no arguments, like a job: the id names the record)."""
    from collector.runner import current_runtime

    job = get_current_job()
    if job is None:
        raise CollectorError("run_check must be called by an RQ worker")
    runtime = current_runtime()
    keys = Keys(runtime.config.key_prefix)
    platform_id, settings_json, sealed = runtime.connection.hmget(
        keys.check(job.id), ["platform_id", "settings", "secrets"]
    )
    if platform_id is None:
        return {"ok": False, "message": "the check request expired before a worker took it", "checks": []}
    answer = _answer(runtime, platform_id.decode(), json.loads(settings_json), sealed)
    with runtime.connection.pipeline(transaction=True) as pipe:
        pipe.rpush(keys.check_answer(job.id), json.dumps(answer, default=str))
        pipe.expire(keys.check_answer(job.id), runtime.config.check_timeout_s + 5)
        pipe.delete(keys.check(job.id))
        pipe.execute()
    log.info("check %s (%s): %s", job.id, platform_id.decode(), "ok" if answer["ok"] else "failed")
    return {"ok": answer["ok"]}


def _answer(runtime: Any, platform_id: str, masked: dict[str, Any], sealed: bytes | None) -> dict[str, Any]:
    registry: Registry = runtime.registry
    platform = registry.get(platform_id)
    if platform is None:
        return {"ok": False, "message": f"platform {platform_id!r} is not installed on this worker", "checks": []}
    secrets: dict[str, Any] = {}
    if sealed:
        if runtime.sealer is None:
            return {"ok": False, "message": "the worker has no COLLECTOR_SECRET_KEY to open the secrets", "checks": []}
        try:
            secrets = runtime.sealer.unseal(sealed.decode())
        except ConfigError as exc:
            return {"ok": False, "message": exc.message, "checks": []}
    settings = merge_secrets(masked, secrets)
    return check_settings(platform, settings, secret_values(secrets))
