"""What a pool supervisor watches besides births and deaths: cancels to relay, hard timeouts, orphaned children."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from collector import defaults
from collector.config import Config
from collector.run.runner import Runtime
from collector.store.connection import connect_to
from collector.store.records import Keys
from collector.workflows.reaper import beat_child

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1   # linux/prctl.h


class CancelSlots(Protocol):
    def ask_cancel(self, index: int, job_id: str) -> None: ...

    def deadline(self, index: int) -> float: ...


class Watchdog:
    """Relays cancels to the children running the jobs (SIGUSR1), kills those that ignore a cancel past
    `cancel_grace_s`, and those still running `TIMEOUT_GRACE_S` past their timeout (the alarm did not stop them)."""

    def __init__(self, config: Config, slots: CancelSlots, *, kill: Callable[[int, str, str], None],
                 killed: Callable[[int], bool]) -> None:
        self.config = config
        self.slots = slots
        self.keys = Keys(config.key_prefix)
        self._kill, self._killed = kill, killed
        self._cancelling: dict[str, float] = {}   # job id → when its cancel was first relayed

    def check(self, connection: redis.Redis, busy: dict[str, tuple[int, int]]) -> None:
        """`busy` maps each running job to (slot index, child pid). One Redis round trip, only when busy."""
        self._deadlines(busy)
        self._cancelling = {j: t for j, t in self._cancelling.items() if j in busy}
        if not busy:
            return
        flagged = connection.smismember(self.keys.cancels(), list(busy))
        now = time.monotonic()
        grace = self.config.cancel_grace_s
        for (job_id, (index, pid)), asked in zip(busy.items(), flagged, strict=True):
            if not asked:
                continue
            since = self._cancelling.setdefault(job_id, now)
            if now - since <= grace:
                self.slots.ask_cancel(index, job_id)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)   # repeated until it stops: a signal before the job began is lost
            elif not self._killed(pid):
                log.warning("job %s did not stop within %.0f s of its cancel; killing its worker", job_id, grace)
                self._kill(pid, "canceled", f"it did not stop within {grace:g} s, so its worker was killed")

    def _deadlines(self, busy: dict[str, tuple[int, int]]) -> None:
        now = time.time()
        for job_id, (index, pid) in busy.items():
            deadline = self.slots.deadline(index)
            if deadline and now > deadline and not self._killed(pid):
                log.warning("job %s is past its timeout and ignores the alarm; killing its worker", job_id)
                self._kill(pid, "timeout", f"still running {defaults.TIMEOUT_GRACE_S:g} s past it; its worker "
                           "was killed")


class ChildBeat(threading.Thread):
    """In each child: shows its pool alive (every `POOL_HEARTBEAT_S`; the reaper declares a pool dead only when
    neither its supervisor nor a child beats), and checks every `LEASE_CHECK_S` that the running job still holds
    its lease, so a run that lost it (recovered elsewhere while this process was frozen or cut off) stops at its
    next `ctx` call even when it writes nothing for a while."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(name="collector-child-beat", daemon=True)
        self.runtime = runtime
        # Its own client, with timeouts: never queued behind the job's writes, never hung by a frozen Redis.
        self.connection = connect_to(runtime.config)
        self.halt = threading.Event()

    def run(self) -> None:
        next_beat = 0.0
        while True:
            try:
                now = time.monotonic()
                if now >= next_beat:
                    beat_child(self.connection, self.runtime.config, self.runtime.pool_name)
                    next_beat = now + defaults.POOL_HEARTBEAT_S
                ctx = self.runtime.current
                if ctx is not None and ctx.lease is not None:
                    ctx.lease.held(connection=self.connection)
            except redis.RedisError as exc:
                log.debug("child heartbeat: Redis unreachable (%s); trying again", exc)
            if self.halt.wait(defaults.LEASE_CHECK_S):
                return


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this child when the supervisor dies (Linux), so no orphan runs a job that the
    reaper will retry elsewhere; a child already orphaned exits at once."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def wait_for_redis(connection: redis.Redis, parent: int) -> None:
    """Block until Redis answers, backing off, so a child born during an outage waits instead of dying."""
    pause = 0.2
    while True:
        try:
            connection.ping()
            return
        except (redis.ConnectionError, redis.TimeoutError):
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def relay_cancel(runtime: Runtime, job_id: str | None) -> None:
    """SIGUSR1 in a child: cancel the running job if it is the one the supervisor named."""
    current = runtime.current
    if job_id and current is not None and current.job_id == job_id:
        current.cancel()
