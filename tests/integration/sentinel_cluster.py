"""A Redis primary, a replica and three sentinels on loopback, private to one test or benchmark run."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from collector.cli.embedded import free_port

MASTER = "collector-test"
# A primary silent this long is subjectively down for a sentinel. At 1000, on a loaded machine, the sentinels once
# marked the replica they had just promoted down within a second and failed over a second time, to the old primary
# restarted meanwhile; they PING once a second, so 2000 leaves a new primary a PING to answer.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 3000  # a failover not finished in this long is tried again
ENDED = frozenset({"finished", "failed", "stopped", "canceled", "404", "410"})
T = TypeVar("T")


def redis_server_binary() -> str | None:
    """`redis-server` on PATH (it runs as a sentinel too), or None."""
    return shutil.which("redis-server")


class SentinelCluster:
    """`start()` launches primary, replica and sentinels and waits until the sentinels know the replica;
    `kill_primary()` is `kill -9` of whichever server is primary; `stop()` ends every process it started."""

    def __init__(self, workdir: Path, *, binary: str, replicas: int = 1) -> None:
        self.workdir, self.binary = workdir, binary
        self.servers: dict[int, subprocess.Popen[bytes]] = {}   # port → redis-server process
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}  # port → sentinel process
        self.ports = [free_port() for _ in range(1 + replicas)]

    @property
    def sentinel_list(self) -> str:
        """The value of COLLECTOR_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinels)

    def start(self) -> SentinelCluster:
        primary, *replicas = self.ports
        self._server(primary)
        for replica in replicas:
            self._server(replica, "--replicaof", "127.0.0.1", str(primary))
        for _ in range(3):
            self._sentinel(free_port(), primary)
        self.wait(lambda: self._replicas_known() >= len(replicas), "the sentinels to see the replicas")
        self.wait(lambda: self._sentinels_known() >= 2, "the sentinels to see each other")
        return self

    def _server(self, port: int, *extra: str) -> None:
        data = self.workdir / f"redis-{port}"
        data.mkdir(exist_ok=True)
        self.servers[port] = self._launch(
            # AOF, as in production: a server restarted after a kill comes back with its data, never empty (a
            # sentinel that promotes an empty server makes every replica empty too).
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
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
        log = self.workdir / f"sentinel-{port}.log"
        self.sentinels[port] = self._launch([self.binary, str(conf), "--sentinel"], log)
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
        if port is None:
            raise RuntimeError("no sentinel names a primary")
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

    def lag_replicas(self, nbytes: int) -> None:
        """Leave the replicas `nbytes` behind: stop them (SIGSTOP) and write that much to the primary, more than
        their sockets buffer, so what is written next waits in the primary's memory and dies with it."""
        primary = self.primary_port()
        for port, process in self.servers.items():
            if port != primary:
                process.send_signal(signal.SIGSTOP)
        with redis.Redis(port=primary or 0, socket_timeout=5) as client:
            chunk = b"x" * (1 << 20)
            for n in range(max(1, nbytes >> 20)):
                client.set(f"lag:{n}", chunk)

    def resume_replicas(self) -> None:
        for process in self.servers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)

    def restart(self, port: int) -> None:
        """Start a server again on `port`, empty; the sentinels make it a replica of the current primary."""
        self._server(port)

    def stop(self) -> None:
        self.resume_replicas()
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
    def wait(predicate: Callable[[], T | None], what: str, timeout_s: float = 30.0) -> T:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                found = predicate()
            except redis.RedisError:
                found = None
            if found:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"waited {timeout_s:g} s for {what}")


@dataclasses.dataclass
class Answer:
    """One submit during a failover run: when (seconds from the kill; negative before), status, job id, code."""

    at_s: float
    status: int
    job_id: str | None
    error: str | None
    lagging: bool = False  # made while the replicas lagged behind


@dataclasses.dataclass
class FailoverRun:
    """Jobs submitted without pause while the primary is killed: the answers, and what became of the 202s."""

    answers: list[Answer] = dataclasses.field(default_factory=list)
    promoted_after_s: float = 0.0
    ended: dict[str, str] = dataclasses.field(default_factory=dict)  # acknowledged job id → its last status

    @property
    def acknowledged(self) -> list[str]:
        return [a.job_id for a in self.answers if a.status == 202 and a.job_id]

    @property
    def unavailable_s(self) -> float:
        """Seconds from the first 503 after the kill to the last one (0 when there was none)."""
        times = [a.at_s for a in self.answers if a.status == 503 and a.at_s >= 0]
        return max(times) - min(times) if times else 0.0

    def count(self, status: int, error: str | None = None) -> int:
        return sum(1 for a in self.answers if a.status == status and (error is None or a.error == error))

    @property
    def lost(self) -> list[str]:
        """Acknowledged jobs that did not finish."""
        return [job_id for job_id in self.acknowledged if self.ended.get(job_id) != "finished"]


def submit_through_failover(
    cluster: SentinelCluster, post: Callable[[], tuple[int, Any]], get: Callable[[str], tuple[int, Any]], *,
    before: int = 15, after: int = 15, pause_s: float = 0.05, settle_s: float = 60.0, lag_bytes: int = 0,
    lagging: int = 4,
) -> FailoverRun:
    """Submit (`post`) until `before` jobs are acknowledged, kill -9 the primary, restart it (it rejoins as a
    replica once a replica was promoted), keep submitting until `after` more are acknowledged; then wait, reading
    each acknowledged job (`get`), until every one has ended or `settle_s` has passed. With `lag_bytes`, the
    replicas are left that far behind just before the kill, and `lagging` submits are made meanwhile."""
    run = FailoverRun()
    killed: float | None = None

    def one(lagging: bool = False) -> None:
        status, body = post()
        at = time.monotonic() - killed if killed is not None else -1.0
        job_id = body.get("job_id") if isinstance(body, dict) else None
        job_id = job_id or (body.get("details", {}).get("job_id") if isinstance(body, dict) else None)
        error = body.get("error") if isinstance(body, dict) else None
        run.answers.append(Answer(at, status, job_id, error, lagging))
        time.sleep(pause_s)

    while len(run.acknowledged) < before:
        one()
    if lag_bytes:
        cluster.lag_replicas(lag_bytes)
        for _ in range(lagging):
            one(lagging=True)
    old = cluster.kill_primary()
    killed = time.monotonic()
    cluster.resume_replicas()
    acked_before = len(run.acknowledged)
    watcher = threading.Thread(target=lambda: _rejoin(cluster, old, run, killed), daemon=True)
    watcher.start()
    while len(run.acknowledged) < acked_before + after and time.monotonic() - killed < settle_s:
        one()
    watcher.join(settle_s)
    deadline = time.monotonic() + settle_s
    for job_id in run.acknowledged:
        while time.monotonic() < deadline:
            status, body = get(job_id)
            run.ended[job_id] = body.get("status", str(status)) if status == 200 else str(status)
            if run.ended[job_id] in ENDED:
                break
            time.sleep(0.1)
    return run


def _rejoin(cluster: SentinelCluster, old: int, run: FailoverRun, killed: float) -> None:
    cluster.wait_new_primary(old)
    run.promoted_after_s = time.monotonic() - killed
    cluster.restart(old)
