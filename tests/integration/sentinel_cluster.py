"""A Redis primary, a replica and three sentinels on loopback, private to one test or benchmark run."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from collector.cli.embedded import free_port

MASTER = "collector-test"
DOWN_AFTER_MS = 1000       # a primary silent this long is subjectively down for a sentinel
FAILOVER_TIMEOUT_MS = 3000  # a failover not finished in this long is tried again


def redis_server_binary() -> str | None:
    """`redis-server` on PATH (it runs as a sentinel too), or None."""
    return shutil.which("redis-server")


class SentinelCluster:
    """`start()` launches primary, replica and sentinels and waits until the sentinels know the replica;
    `kill_primary()` is `kill -9` of whichever server is primary; `stop()` ends every process it started."""

    def __init__(self, workdir: Path, *, binary: str) -> None:
        self.workdir, self.binary = workdir, binary
        self.servers: dict[int, subprocess.Popen[bytes]] = {}   # port → redis-server process
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}  # port → sentinel process
        self.ports = [free_port(), free_port()]

    @property
    def sentinel_list(self) -> str:
        """The value of COLLECTOR_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinels)

    def start(self) -> SentinelCluster:
        primary, replica = self.ports
        self._server(primary)
        self._server(replica, "--replicaof", "127.0.0.1", str(primary))
        for _ in range(3):
            self._sentinel(free_port(), primary)
        self.wait(lambda: self._replicas_known() >= 1, "the sentinels to see the replica")
        self.wait(lambda: self._sentinels_known() >= 2, "the sentinels to see each other")
        return self

    def _server(self, port: int, *extra: str) -> None:
        data = self.workdir / f"redis-{port}"
        data.mkdir(exist_ok=True)
        self.servers[port] = self._launch(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(data), "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", *extra],
            data / "log",
        )
        self.wait(lambda: self._ping(port), f"redis-server on {port}")

    def _sentinel(self, port: int, primary: int) -> None:
        conf = self.workdir / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.sentinels[port] = self._launch([self.binary, str(conf), "--sentinel"], self.workdir / f"sentinel-{port}.log")
        self.wait(lambda: self._ping(port), f"sentinel on {port}")

    def _launch(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it."""
        for port in self.sentinels:
            try:
                with redis.Redis(port=port, socket_timeout=0.5) as client:
                    found = client.sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            if found:
                return int(found[1])
        return None

    def kill_primary(self) -> int:
        """SIGKILL the primary (no shutdown, no last write); returns its port."""
        port = self.primary_port()
        assert port is not None, "no sentinel names a primary"
        process = self.servers.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return port

    def wait_new_primary(self, old: int, timeout_s: float = 30.0) -> int:
        """Wait until the sentinels name a primary other than `old` and it answers as primary; its port."""
        def promoted() -> int | None:
            port = self.primary_port()
            if port is None or port == old:
                return None
            try:
                with redis.Redis(port=port, socket_timeout=0.5) as client:
                    return port if client.info("replication").get("role") == "master" else None
            except redis.RedisError:
                return None
        return self.wait(promoted, "a replica to be promoted", timeout_s)

    def stop(self) -> None:
        for process in [*self.sentinels.values(), *self.servers.values()]:
            if process.poll() is None:
                process.kill()
            process.wait()

    def _replicas_known(self) -> int:
        port = next(iter(self.sentinels))
        with redis.Redis(port=port, socket_timeout=0.5) as client:
            return len(client.sentinel_slaves(MASTER))

    def _sentinels_known(self) -> int:
        port = next(iter(self.sentinels))
        with redis.Redis(port=port, socket_timeout=0.5) as client:
            return len(client.sentinel_sentinels(MASTER))

    @staticmethod
    def _ping(port: int) -> bool:
        try:
            with redis.Redis(port=port, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    @staticmethod
    def wait(predicate: object, what: str, timeout_s: float = 30.0) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                found = predicate()  # type: ignore[operator]
            except redis.RedisError:
                found = None
            if found:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"waited {timeout_s:g} s for {what}")
