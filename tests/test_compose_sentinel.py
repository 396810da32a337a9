"""The compose layout with Redis failover: the services the API and workers name exist, and secrets are required."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from collector.config import Config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = YAML(typ="safe").load((ROOT / "docker-compose.sentinel.yml").read_text())
SERVICES = COMPOSE["services"]


def test_api_and_workers_find_the_primary_through_the_three_sentinels_of_the_file() -> None:
    for name in ("api", "worker"):
        env = SERVICES[name]["environment"]
        assert "COLLECTOR_REDIS_URL" not in env
        config = Config(redis_sentinels=env["COLLECTOR_REDIS_SENTINELS"], redis_master=env["COLLECTOR_REDIS_MASTER"])
        assert sorted(host for host, _ in config.sentinels) == ["sentinel-1", "sentinel-2", "sentinel-3"]
        assert all(port == 26379 for _, port in config.sentinels)
        assert {h for h, _ in config.sentinels} <= set(SERVICES) and env["COLLECTOR_REDIS_MIN_REPLICAS"].endswith("1}")
        for monitor in (SERVICES[h]["command"][-1] for h, _ in config.sentinels):
            assert f"sentinel monitor {config.redis_master} redis-primary 6379 2" in monitor


def test_every_password_is_required_and_redis_stays_private() -> None:
    env = SERVICES["api"]["environment"]
    for name in ("COLLECTOR_REDIS_PASSWORD", "COLLECTOR_REDIS_SENTINEL_PASSWORD", "COLLECTOR_SECRET_KEY"):
        assert ":?" in env[name], f"{name} must be required, with no default baked in"
    for name in ("redis-primary", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"):
        assert "ports" not in SERVICES[name], f"{name} must stay private to the compose network"
    replica = SERVICES["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1] == "redis-primary"
    for name in ("redis-primary", "redis-replica"):  # either may be primary after a failover
        command = SERVICES[name]["command"]
        assert "--requirepass" in command and "--masterauth" in command
