"""Settings of the service, read from COLLECTOR_* environment variables (the only reader of os.environ)."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping

from collector import defaults
from collector.errors import ConfigError
from collector.masking import mask_url
from collector.types import CONCURRENCY_KEY

PLATFORM_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PREFIX = "COLLECTOR_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the API, the workers and the CLI are configured with."""

    redis_url: str | None = None
    redis_password: str | None = dataclasses.field(default=None, repr=False)
    redis_sentinels: str | None = None
    redis_master: str = defaults.REDIS_MASTER
    redis_sentinel_password: str | None = dataclasses.field(default=None, repr=False)
    redis_min_replicas: int = defaults.REDIS_MIN_REPLICAS
    redis_min_replicas_wait_s: float = defaults.REDIS_MIN_REPLICAS_WAIT_S
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
    api_tokens_file: str | None = None
    retry_max: int = defaults.RETRY_MAX
    retry_backoff_s: float = defaults.RETRY_BACKOFF_S
    retry_backoff_cap_s: float = defaults.RETRY_BACKOFF_CAP_S
    retry_jitter: float = defaults.RETRY_JITTER
    max_worker_deaths: int = defaults.MAX_WORKER_DEATHS
    cancel_grace_s: float = defaults.CANCEL_GRACE_S
    pool_heartbeat_ttl_s: int = defaults.POOL_HEARTBEAT_TTL_S
    reap_interval_s: float = defaults.REAP_INTERVAL_S
    sweep_interval_s: float = defaults.SWEEP_INTERVAL_S
    open_record_ttl_s: int = defaults.OPEN_RECORD_TTL_S
    redis_wait_s: float = defaults.REDIS_WAIT_S
    redis_connect_timeout_s: float = defaults.REDIS_CONNECT_TIMEOUT_S
    redis_socket_timeout_s: float = defaults.REDIS_SOCKET_TIMEOUT_S
    dataset_max_rows: int = defaults.DATASET_MAX_ROWS
    dataset_max_bytes: int = defaults.DATASET_MAX_BYTES
    full_page_max_rows: int = defaults.FULL_PAGE_MAX_ROWS
    max_timeout_s: int = defaults.MAX_TIMEOUT_S
    max_schedules: int = defaults.MAX_SCHEDULES
    schedule_min_interval_s: int = defaults.SCHEDULE_MIN_INTERVAL_S
    submits_per_minute: int = defaults.SUBMITS_PER_MINUTE
    rate_max_wait_s: float = defaults.RATE_MAX_WAIT_S
    state_ttl_s: int = defaults.STATE_TTL_S
    priority_age_s: float = defaults.PRIORITY_AGE_S
    idempotency_ttl_s: int = defaults.IDEMPOTENCY_TTL_S
    platforms_package: str = "platforms"
    log_level: str = "INFO"
    log_format: str = defaults.LOG_FORMAT
    url: str = defaults.URL
    api_token: str | None = None
    stream_max_s: float = defaults.STREAM_MAX_S
    http_threads: int = defaults.HTTP_THREADS
    http_connection_limit: int = defaults.HTTP_CONNECTION_LIMIT
    http_header_timeout_s: float = defaults.HTTP_HEADER_TIMEOUT_S
    http_body_timeout_s: float = defaults.HTTP_BODY_TIMEOUT_S
    http_idle_timeout_s: float = defaults.HTTP_IDLE_TIMEOUT_S
    data_dir: str = defaults.DATA_DIR
    connections: str | None = None
    # The environment this config was read from: the connections file may name variables holding secrets.
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    egress_allow: str | None = None
    max_response_bytes: int = defaults.MAX_RESPONSE_BYTES
    concurrency: str = defaults.CONCURRENCY

    def __post_init__(self) -> None:
        if self.job_timeout_s > self.max_timeout_s:
            raise ConfigError(
                f"{PREFIX}JOB_TIMEOUT_S={self.job_timeout_s} is over {PREFIX}MAX_TIMEOUT_S={self.max_timeout_s}: "
                "no job could run that long; lower the first or raise the second"
            )
        for name in ("dataset_max_rows", "dataset_max_bytes", "full_page_max_rows", "max_timeout_s",
                     "schedule_min_interval_s", "state_ttl_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{PREFIX}{name.upper()}={getattr(self, name)} must be 1 or more")
        if self.queue_name.endswith((":high", ":low", ":wake")) or ":intermediate" in self.queue_name:
            raise ConfigError(f"{PREFIX}QUEUE_NAME={self.queue_name!r} would be read as one of the lists beside a "
                              "queue (its high and low lanes, its wake-up list, its workers' claims); choose a name "
                              "without that ending")
        if self.priority_age_s < 0:
            raise ConfigError(f"{PREFIX}PRIORITY_AGE_S={self.priority_age_s} must be 0 (strict priority) or more")
        if self.idempotency_ttl_s < 1:
            raise ConfigError(f"{PREFIX}IDEMPOTENCY_TTL_S={self.idempotency_ttl_s} must be 1 or more (seconds)")
        for name in ("redis_connect_timeout_s", "redis_socket_timeout_s", "rate_max_wait_s", "stream_max_s",
                     "redis_min_replicas_wait_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{PREFIX}{name.upper()}={getattr(self, name)} must be above 0 (seconds)")
        if self.redis_min_replicas and self.redis_min_replicas_wait_s >= self.redis_socket_timeout_s:
            raise ConfigError(
                f"{PREFIX}REDIS_MIN_REPLICAS_WAIT_S={self.redis_min_replicas_wait_s:g} is not below "
                f"{PREFIX}REDIS_SOCKET_TIMEOUT_S={self.redis_socket_timeout_s:g}: a submit would give up on Redis "
                "before its WAIT for replicas ends; lower the first or raise the second"
            )
        if self.redis_sentinels is not None:
            sentinel_addresses(self.redis_sentinels)  # refused here, at start-up, rather than at the first command
            if not self.redis_master:
                raise ConfigError(f"{PREFIX}REDIS_MASTER is empty: name the master the sentinels monitor")
        for name in ("max_schedules", "submits_per_minute", "redis_min_replicas"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{PREFIX}{name.upper()}={getattr(self, name)} must be 0 (no limit) or more")
        _ = self.caps  # a wrong COLLECTOR_CONCURRENCY stops the process at start-up, not its first capped job

    @functools.cached_property
    def caps(self) -> dict[str, int]:
        """COLLECTOR_CONCURRENCY as `{"platform": N, "platform:key": N}`."""
        return parse_caps(self.concurrency)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Build a config from `COLLECTOR_<FIELD>` variables; `overrides` win over the environment."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            if field.name == "environ":
                continue
            raw = env.get(PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("environ", dict(env))
        return cls(**values)  # type: ignore[arg-type]

    @property
    def redis_configured(self) -> bool:
        """Whether a Redis is named, by URL or through Sentinel."""
        return bool(self.redis_url or self.redis_sentinels)

    @property
    def redis_where(self) -> str:
        """The configured Redis as messages name it, passwords masked."""
        if self.redis_sentinels:
            return f"Sentinel master {self.redis_master!r} (sentinels {self.redis_sentinels})"
        return mask_url(self.redis_url or "the configured Redis")

    @property
    def redis_setting(self) -> str:
        """The variable that says where Redis is, for messages that tell the operator what to check."""
        return f"{PREFIX}REDIS_SENTINELS" if self.redis_sentinels else f"{PREFIX}REDIS_URL"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The `host:port` pairs of COLLECTOR_REDIS_SENTINELS (none when unset)."""
        return sentinel_addresses(self.redis_sentinels) if self.redis_sentinels else []

    def public(self) -> dict[str, object]:
        """The config as shown to operators: secrets replaced by whether they are set."""
        shown = dataclasses.asdict(self)
        shown["secret_key"] = "***" if self.secret_key else None
        shown["api_token"] = "***" if self.api_token else None
        shown["api_tokens"] = "***" if self.api_tokens else None
        shown["redis_password"] = "***" if self.redis_password else None
        shown["redis_sentinel_password"] = "***" if self.redis_sentinel_password else None
        shown.pop("environ")
        if self.redis_url:
            shown["redis_url"] = mask_url(self.redis_url)
        return shown


def parse_caps(raw: str) -> dict[str, int]:
    """`platform=2, platform:key=1` as a dict; `ConfigError` names the entry that is wrong and the form it needs."""
    caps: dict[str, int] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        name, sep, value = (part.strip() for part in entry.partition("="))
        platform, colon, key = name.partition(":")
        if (not sep or not PLATFORM_ID.match(platform) or (colon and not CONCURRENCY_KEY.match(key))
                or not value.isdigit() or int(value) < 1):
            raise ConfigError(
                f"{PREFIX}CONCURRENCY entry {entry!r} is not `platform=N` or `platform:key=N` with N 1 or more "
                "(a key is 1-64 letters, digits or `_.@-`); e.g. COLLECTOR_CONCURRENCY=\"json_feed=2,json_feed:acme=1\""
            )
        caps[name] = int(value)
    return caps
def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """`host:port,host:port,...` as pairs; a `ConfigError` naming the bad entry otherwise."""
    addresses: list[tuple[str, int]] = []
    for entry in (part.strip() for part in text.split(",")):
        host, _, port = entry.rpartition(":")
        host = host.strip("[]")  # an IPv6 address is written [::1]:26379
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{PREFIX}REDIS_SENTINELS={text!r}: {entry!r} is not host:port; list the sentinels as "
                "host:port separated by commas, e.g. sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
            )
        addresses.append((host, int(port)))
    return addresses


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
