"""Settings of the service, read from COLLECTOR_* environment variables (the only reader of os.environ)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from collector import defaults
from collector.errors import ConfigError

PREFIX = "COLLECTOR_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the API, the workers and the CLI are configured with."""

    redis_url: str | None = None
    secret_key: str | None = None
    queue_name: str = defaults.QUEUE_NAME
    key_prefix: str = defaults.KEY_PREFIX
    job_timeout_s: int = defaults.JOB_TIMEOUT_S
    record_ttl_s: int = defaults.RECORD_TTL_S
    failed_record_ttl_s: int = defaults.FAILED_RECORD_TTL_S
    progress_interval_s: float = defaults.PROGRESS_INTERVAL_S
    shutdown_grace_s: float = defaults.SHUTDOWN_GRACE_S
    max_body_bytes: int = defaults.MAX_BODY_BYTES
    check_timeout_s: int = defaults.CHECK_TIMEOUT_S
    max_json_depth: int = defaults.MAX_JSON_DEPTH
    max_string_chars: int = defaults.MAX_STRING_CHARS
    api_tokens: str | None = None
    retry_max: int = defaults.RETRY_MAX
    retry_backoff_s: float = defaults.RETRY_BACKOFF_S
    retry_backoff_cap_s: float = defaults.RETRY_BACKOFF_CAP_S
    retry_jitter: float = defaults.RETRY_JITTER
    max_worker_deaths: int = defaults.MAX_WORKER_DEATHS
    cancel_grace_s: float = defaults.CANCEL_GRACE_S
    pool_heartbeat_ttl_s: int = defaults.POOL_HEARTBEAT_TTL_S
    reap_interval_s: float = defaults.REAP_INTERVAL_S
    redis_wait_s: float = defaults.REDIS_WAIT_S
    platforms_package: str = "platforms"
    log_level: str = "INFO"
    log_format: str = defaults.LOG_FORMAT
    url: str = defaults.URL
    api_token: str | None = None
    egress_allow: str | None = None
    max_response_bytes: int = defaults.MAX_RESPONSE_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Build a config from `COLLECTOR_<FIELD>` variables; `overrides` win over the environment."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def public(self) -> dict[str, object]:
        """The config as shown to operators: secrets replaced by whether they are set."""
        shown = dataclasses.asdict(self)
        shown["secret_key"] = "***" if self.secret_key else None
        shown["api_token"] = "***" if self.api_token else None
        shown["api_tokens"] = "***" if self.api_tokens else None
        if self.redis_url:
            from collector.masking import mask_url

            shown["redis_url"] = mask_url(self.redis_url)
        return shown


def _parse(name: str, type_name: object, raw: str) -> object:
    kind = str(type_name)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(
            f"{PREFIX}{name.upper()}={raw!r} is not a number; set it to a {kind.split()[0]} or unset it"
        ) from None
    return raw
