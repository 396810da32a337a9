"""Connection checks: a platform's optional `_check()` and its storage targets' `_check()`, run without
collecting anything — in this process (`collector check`), or asked of a worker (`POST /platforms/check`,
which `run.checks.run_check` answers)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from collector.config import Config
from collector.errors import CheckTimeoutError, ConfigError
from collector.masking import mask_text
from collector.resources import reach
from collector.sealing import Sealer
from collector.specs.job import JobSpec
from collector.specs.registry import PlatformSpec
from collector.specs.secrets import secret_values, split_secrets
from collector.store.records import Keys, encode
from collector.store.rq import RQ
from storage.base import Storage

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
    with connection.pipeline(transaction=True) as pipe:
        pipe.multi()
        pipe.hset(keys.check(check_id), mapping=encode(fields))
        pipe.expire(keys.check(check_id), linger_s)
        RQ(connection, config).enqueue_check(pipe, check_id, linger_s=linger_s,
                                             description=f"{spec.platform.id} connection check")
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
