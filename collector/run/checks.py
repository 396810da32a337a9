"""What a worker runs for `POST /platforms/check`: the checks of the settings a check request names."""

from __future__ import annotations

import json
import logging
from typing import Any

from collector.errors import ConfigError
from collector.run.runner import Runtime, current_runtime
from collector.specs.secrets import merge_secrets, secret_values
from collector.store.records import Keys
from collector.store.rq import current_job_id
from collector.submit.checks import check_settings

log = logging.getLogger(__name__)


def run_check() -> dict[str, Any]:
    """What a worker runs for `POST /platforms/check` (no arguments, like a job: the id names the record)."""
    check_id = current_job_id("run_check")
    runtime = current_runtime()
    keys = Keys(runtime.config.key_prefix)
    platform_id, settings_json, sealed = runtime.connection.hmget(
        keys.check(check_id), ["platform_id", "settings", "secrets"]
    )
    if platform_id is None:
        return {"ok": False, "message": "the check request expired before a worker took it", "checks": []}
    answer = _answer(runtime, platform_id.decode(), json.loads(settings_json), sealed)
    with runtime.connection.pipeline(transaction=True) as pipe:
        pipe.rpush(keys.check_answer(check_id), json.dumps(answer, default=str))
        pipe.expire(keys.check_answer(check_id), runtime.config.check_timeout_s + 5)
        pipe.delete(keys.check(check_id))
        pipe.execute()
    log.info("check %s (%s): %s", check_id, platform_id.decode(), "ok" if answer["ok"] else "failed")
    return {"ok": answer["ok"]}


def _answer(runtime: Runtime, platform_id: str, masked: dict[str, Any], sealed: bytes | None) -> dict[str, Any]:
    platform = runtime.registry.get(platform_id)
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
