"""Connecting to Redis: by URL, or to the primary Sentinel names, followed through a failover without a restart."""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from collector.config import Config
from collector.errors import ConfigError
from collector.store.records import connect

# What COLLECTOR_REDIS_URL still says when Sentinel names the primary: who to be, which database, whether over TLS
# (`rediss://`, with its `ssl_*` options), not where.
URL_OPTIONS_KEPT = ("username", "password", "db")


def connect_to(config: Config, *, blocking: bool = False) -> Redis:
    """A client for the configured Redis, with the config's connect and answer timeouts (`blocking` clients,
    which wait on queues, have no answer timeout). With COLLECTOR_REDIS_SENTINELS it asks the sentinels for the
    primary of COLLECTOR_REDIS_MASTER on every new connection, and drops its connections when the primary is
    lost or turns replica: after a failover the next command (or its one retry) reaches the new primary."""
    if not config.redis_sentinels:
        if not config.redis_url:
            raise ConfigError("neither COLLECTOR_REDIS_URL nor COLLECTOR_REDIS_SENTINELS is set: name the Redis "
                              "(or the sentinels watching it), or run `collector up` for an embedded one")
        client = connect(config.redis_url, blocking=blocking, connect_timeout_s=config.redis_connect_timeout_s,
                         socket_timeout_s=config.redis_socket_timeout_s)
        if config.redis_password and client.connection_pool.connection_kwargs.get("password") is None:
            client.connection_pool.connection_kwargs["password"] = config.redis_password
        return client
    return sentinel_for(config).master_for(config.redis_master, **master_options(config, blocking=blocking))


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary Sentinel names that is dropped when a read fails or is interrupted, as redis-py's
    plain connections are. Its Sentinel connections keep the socket by default: a worker's BLMOVE broken off by
    SIGTERM then left its answer pending, the next command on that connection waited for it (a child that never
    stopped), and a job BLMOVE handed over later would have been read as the answer to something else."""

    def read_response(self, *args: Any, disconnect_on_error: bool = True, **kwargs: Any) -> Any:
        return super().read_response(*args, disconnect_on_error=disconnect_on_error, **kwargs)


class PrimarySSLConnection(PrimaryConnection, SSLConnection):
    """The same over TLS, when COLLECTOR_REDIS_URL is a `rediss://` URL."""


def sentinel_for(config: Config) -> Sentinel:
    """A client of the sentinels: each lookup gives up on a sentinel after the connect timeout and asks the next."""
    return Sentinel(
        config.sentinels,
        sentinel_kwargs={
            "password": config.redis_sentinel_password,
            "socket_connect_timeout": config.redis_connect_timeout_s,
            "socket_timeout": config.redis_connect_timeout_s,
        },
    )


def master_options(config: Config, *, blocking: bool) -> dict[str, Any]:
    """The options of connections to the primary: timeouts, one retry of a dropped connection (which asks the
    sentinels anew), the password and database (COLLECTOR_REDIS_PASSWORD, or those COLLECTOR_REDIS_URL names)."""
    options: dict[str, Any] = {
        "connection_class": PrimaryConnection,
        "socket_connect_timeout": config.redis_connect_timeout_s,
        "socket_timeout": None if blocking else config.redis_socket_timeout_s,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,)),
        "health_check_interval": 30,
    }
    if config.redis_url:
        parsed = parse_url(config.redis_url)
        options.update({name: value for name, value in parsed.items()
                        if value is not None and (name in URL_OPTIONS_KEPT or name.startswith("ssl_"))})
        if parsed.get("connection_class") is SSLConnection:
            options["connection_class"] = PrimarySSLConnection
    if config.redis_password and options.get("password") is None:
        options["password"] = config.redis_password
    return options
