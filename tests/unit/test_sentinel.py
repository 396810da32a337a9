"""Redis through Sentinel, without servers: the settings, the clients `connect_to` builds, the dashboard's client, and
the 503 of a submit that fewer replicas than asked acknowledged."""

from __future__ import annotations

import dataclasses

import fakeredis
import pytest
from flask import Flask
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

from collector.api.dashboard import mount_dashboard
from collector.app import create_app
from collector.config import Config
from collector.errors import ConfigError
from collector.specs.registry import Registry
from collector.store.connection import PrimaryConnection, PrimarySSLConnection, connect_to
from collector.store.replication import ReplicatedPipeline

SENTINELS = "10.0.0.1:26379,sentinel-2:26380,[::1]:26381"


def test_sentinel_settings_are_read_from_the_environment() -> None:
    config = Config.from_env({
        "COLLECTOR_REDIS_SENTINELS": SENTINELS, "COLLECTOR_REDIS_MASTER": "jobs",
        "COLLECTOR_REDIS_SENTINEL_PASSWORD": "sentinel-pw-value", "COLLECTOR_REDIS_PASSWORD": "primary-pw-value",
        "COLLECTOR_REDIS_MIN_REPLICAS": "1", "COLLECTOR_REDIS_MIN_REPLICAS_WAIT_S": "0.5",
    })
    assert config.sentinels == [("10.0.0.1", 26379), ("sentinel-2", 26380), ("::1", 26381)]
    assert (config.redis_master, config.redis_min_replicas, config.redis_min_replicas_wait_s) == ("jobs", 1, 0.5)
    assert config.redis_configured and "jobs" in config.redis_where and "sentinel-2:26380" in config.redis_where
    shown = config.public()
    assert shown["redis_password"] == shown["redis_sentinel_password"] == "***"
    assert "pw-value" not in repr(shown) and "pw-value" not in config.redis_where


def test_without_sentinels_nothing_changes() -> None:
    config = Config.from_env({"COLLECTOR_REDIS_URL": "redis://:pw@cache:6379/2"})
    assert (config.sentinels, config.redis_master, config.redis_min_replicas) == ([], "mymaster", 0)
    assert config.redis_where == "redis://:***@cache:6379/2"
    assert not Config().redis_configured


@pytest.mark.parametrize("value, bad", [
    ("sentinel-1", "'sentinel-1'"), ("a:26379,b", "'b'"), ("a:26379,,b:1", "''"), ("a:port", "'a:port'"),
    ("a:70000", "'a:70000'"), (":26379", "':26379'"),
])
def test_a_sentinel_list_that_is_not_host_port_is_refused_at_start_up(value: str, bad: str) -> None:
    with pytest.raises(ConfigError, match="is not host:port") as caught:
        Config.from_env({"COLLECTOR_REDIS_SENTINELS": value})
    assert bad in caught.value.message and "separated by commas" in caught.value.message


@pytest.mark.parametrize("env, field", [
    ({"COLLECTOR_REDIS_MIN_REPLICAS": "-1"}, "REDIS_MIN_REPLICAS"),
    ({"COLLECTOR_REDIS_MIN_REPLICAS": "one"}, "REDIS_MIN_REPLICAS"),
    ({"COLLECTOR_REDIS_MIN_REPLICAS_WAIT_S": "0"}, "REDIS_MIN_REPLICAS_WAIT_S"),
    ({"COLLECTOR_REDIS_MIN_REPLICAS": "1", "COLLECTOR_REDIS_MIN_REPLICAS_WAIT_S": "2"}, "not below"),
])
def test_replica_settings_out_of_range_are_refused(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Config.from_env(env)


def test_connect_to_a_url_keeps_the_configured_timeouts() -> None:
    config = Config(redis_url="redis://127.0.0.1:1/3", redis_connect_timeout_s=0.3, redis_socket_timeout_s=0.7,
                    redis_password="given-apart")
    api, worker = connect_to(config), connect_to(config, blocking=True)
    kwargs = api.connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"], kwargs["db"]) == (0.3, 0.7, 3)
    assert kwargs["password"] == "given-apart"
    assert worker.connection_pool.connection_kwargs["socket_timeout"] is None  # it waits on the queue
    in_url = connect_to(Config(redis_url="redis://:from-url@127.0.0.1:1/0", redis_password="given-apart"))
    assert in_url.connection_pool.connection_kwargs["password"] == "from-url"


def test_connect_to_sentinels_asks_them_for_the_named_primary() -> None:
    config = Config(redis_sentinels=SENTINELS, redis_master="jobs", redis_sentinel_password="sentinel-pw-value",
                    redis_url="redis://:primary-pw-value@ignored/4", redis_connect_timeout_s=0.3,
                    redis_socket_timeout_s=0.7)
    client = connect_to(config)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "jobs"
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == config.sentinels
    assert all(s.connection_pool.connection_kwargs["password"] == "sentinel-pw-value" for s in sentinels)
    kwargs = pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"], kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (
        "primary-pw-value", 4, 0.7, 0.3)
    assert "host" not in kwargs  # where the primary is comes from the sentinels, never from the URL
    assert connect_to(config, blocking=True).connection_pool.connection_kwargs["socket_timeout"] is None


def test_a_connection_to_the_primary_is_dropped_when_a_read_is_broken_off(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, object] = {}

    def read_response(self: object, *args: object, **kwargs: object) -> None:
        asked.update(kwargs)

    monkeypatch.setattr(SentinelManagedConnection, "read_response", read_response)
    client = connect_to(Config(redis_sentinels=SENTINELS))
    connection = client.connection_pool.make_connection()
    assert isinstance(connection, PrimaryConnection)
    connection.read_response()
    assert asked["disconnect_on_error"] is True  # redis-py's sentinel connections default to keeping the socket


def test_a_rediss_url_makes_the_connections_to_the_primary_tls() -> None:
    config = Config(redis_sentinels=SENTINELS, redis_url="rediss://ignored:6380/0?ssl_cert_reqs=required")
    pool = connect_to(config).connection_pool
    assert pool.connection_class is PrimarySSLConnection and pool.connection_kwargs["ssl_cert_reqs"] == "required"
    assert issubclass(PrimarySSLConnection, PrimaryConnection)


def test_connect_to_without_any_redis_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="COLLECTOR_REDIS_SENTINELS"):
        connect_to(Config())


def test_the_dashboard_reads_through_the_apis_client_when_given_one() -> None:
    app = Flask("t")
    connection = fakeredis.FakeRedis()
    mount_dashboard(app, "Sentinel master 'jobs'", queue_name="collector", connection=connection)
    with app.test_request_context("/rq/0/data/queues.json"):
        hooks = app.before_request_funcs["rq_dashboard"]
        for hook in hooks:
            hook()
        assert app.redis_conn is connection  # type: ignore[attr-defined]
    assert app.config["RQ_DASHBOARD_REDIS_URL"] == ("Sentinel master 'jobs'",)
    assert app.test_client().get("/rq/0/data/queues.json").status_code == 200


def test_a_pipeline_asking_no_replica_sends_no_wait() -> None:
    with ReplicatedPipeline(fakeredis.FakeRedis(), replicas=0, timeout_s=1) as pipe:
        pipe.set("k", "v")
        assert pipe.execute() == [True]
    assert pipe.acknowledged is None and not pipe.short_of(0)


def test_a_submit_fewer_replicas_acknowledged_is_503_and_says_how_to_check_the_job(
    unit_config: Config, registry: Registry
) -> None:
    connection = fakeredis.FakeRedis()  # no replica ever acknowledges here: it does not even know WAIT
    config = dataclasses.replace(unit_config, redis_min_replicas=1, redis_min_replicas_wait_s=0.2)
    client = create_app(config, connection=connection, registry=registry, dashboard=False).test_client()
    answer = client.post("/execution/run", json={"platform_id": "demo", "settings": {"rows": 1}})
    assert answer.status_code == 503, answer.json
    body = answer.json
    job_id = body["details"]["job_id"]
    assert body["error"] == "not_replicated" and body["details"]["replicas_required"] == 1
    assert f"GET /execution/get?job_id={job_id}" in body["message"] and "may" in body["message"]
    assert client.get(f"/execution/get?job_id={job_id}").json["status"] == "queued"  # written: it may still run
