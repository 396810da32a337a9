"""The pre-forked worker pool: a supervisor forks N children up front (each runs job after job in-process),
replaces dead ones, settles the jobs they held, and does the pool's chores."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from typing import Any

import redis

from collector import defaults, egress
from collector.config import Config
from collector.pool.children import CollectorWorker, Slots
from collector.pool.maintenance import Maintenance
from collector.pool.supervision import ChildBeat, Watchdog, die_with_parent, relay_cancel, wait_for_redis
from collector.resources import reach
from collector.run.runner import Runtime, install
from collector.specs.registry import Registry
from collector.store.claiming_queue import claiming_queue
from collector.store.connection import connect_to
from collector.store.rq import JSONSerializer
from collector.store.rq_dashboard import refuse_pickle
from collector.workflows.reaper import Reaper, beat, retire
from collector.workflows.recovery import recover, recover_claims

log = logging.getLogger(__name__)

def describe_exit(status: int) -> str:
    """A dead child's wait status in words: `worker process killed by signal 9 (SIGKILL)`."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else "?"
        text = f"worker process killed by signal {number} ({name})"
        if number == signal.SIGKILL:
            text += ": by an operator, a timeout, or the kernel's out-of-memory killer"
        return text
    return f"worker process exited with code {os.WEXITSTATUS(status)}"




class Pool:
    """`collector worker -n N`: forks N children up front, replaces dead ones and settles the jobs they held,
    relays cancels, enforces hard timeouts, heartbeats, and reaps other pools that died."""

    def __init__(self, config: Config, *, size: int = defaults.WORKERS, burst: bool = False) -> None:
        if not config.redis_configured:
            raise ValueError("the worker pool needs COLLECTOR_REDIS_URL or COLLECTOR_REDIS_SENTINELS")
        # Checked here, so a bad COLLECTOR_EGRESS_ALLOW stops the pool at start instead of every child at birth.
        egress.install(egress.EgressPolicy.from_config(config))
        self.config = config
        self.size = size
        self.burst = burst
        self.name = f"{socket.gethostname()}.{os.getpid()}"
        self.registry = Registry.discover(config.platforms_package)
        reach.ensure(config, create_root=True)  # checked once here; the children fork with it loaded
        self.slots = Slots(size)
        self.children: dict[int, tuple[int, str, float]] = {}   # pid → (slot index, worker name, born)
        self._generation = 0
        self._stopping_since: float | None = None
        self._connection: redis.Redis | None = None
        self._maintenance: Maintenance | None = None
        self._kill_reasons: dict[int, tuple[str, str]] = {}       # pid → (kind, cause) of a kill we ordered
        self.watchdog = Watchdog(config, self.slots, kill=self._kill, killed=self._kill_reasons.__contains__)
        # (job in its slot or "", kind, cause, worker) of dead children whose jobs are not yet settled
        self._unsettled: list[tuple[str, str, str, str]] = []
        self._respawn: dict[int, tuple[float, float]] = {}        # slot index → (when, next backoff)
        self._next_beat = 0.0
        self._redis_down = False
        self._reaper: Reaper | None = None

    @property
    def maintenance(self) -> Maintenance:
        if self._maintenance is None:
            self._maintenance = Maintenance(connection=self.connection, config=self.config, registry=self.registry)
        return self._maintenance

    @property
    def connection(self) -> redis.Redis:
        if self._connection is None:
            self._connection = connect_to(self.config)
        return self._connection

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or, with `burst`, until the queue is drained). Returns an exit code."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)
        refuse_pickle()  # before the fork: every child inherits it
        log.info("pool %s: starting %d workers on queue %r", self.name, self.size, self.config.queue_name)
        self._reaper = Reaper(self.connection, self.config, own_pool=self.name)
        self._duties()
        try:
            for index in range(self.size):
                self._spawn(index)
            while self.children or self._respawn:
                self._reap()
                self._respawn_due()
                if self._stopping_since is not None:
                    self._escalate()
                self._duties()
                if self.children or self._respawn:
                    with contextlib.suppress(InterruptedError):
                        ready, _, _ = select.select([wake_r], [], [], 0.25)
                        if ready:
                            os.read(wake_r, 512)
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            with contextlib.suppress(redis.RedisError):
                self._settle_pending()
                retire(self.connection, self.config, self.name)
        log.info("pool %s: all workers stopped", self.name)
        return 0

    def stop(self) -> None:
        """Ask every child to finish its current job and exit (what SIGTERM does)."""
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            self._respawn.clear()
            log.info("pool %s: stopping; running jobs get %.0f s to finish", self.name, self.config.shutdown_grace_s)
            self._signal_children(signal.SIGTERM)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop()

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _kill(self, pid: int, kind: str, cause: str) -> None:
        self._kill_reasons.setdefault(pid, (kind, cause))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _escalate(self) -> None:
        assert self._stopping_since is not None
        if time.monotonic() - self._stopping_since > self.config.shutdown_grace_s:
            busy = [pid for pid in self.children if pid not in self._kill_reasons]
            if busy:
                log.warning("pool %s: %d workers still busy after the grace period; killing them and requeueing "
                            "their jobs", self.name, len(busy))
            cause = (f"the worker pool shut down and the job was still running after COLLECTOR_SHUTDOWN_GRACE_S="
                     f"{self.config.shutdown_grace_s:g} s; requeued")
            for pid in busy:
                self._kill(pid, "shutdown", cause)

    def _duties(self) -> None:
        """The supervisor's Redis chores; an outage is logged once and never stops the loop."""
        try:
            self._settle_pending()
            now = time.monotonic()
            if now >= self._next_beat:
                self._next_beat = now + defaults.POOL_HEARTBEAT_S
                busy = [j for i in range(self.size) if (j := self.slots.get(i))]
                beat(self.connection, self.config, self.name, jobs=busy,
                     workers=[name for _, name, _ in self.children.values()])
            self.watchdog.check(self.connection, self._busy())
            if self._reaper is not None and self._stopping_since is None:
                self._reaper.tick()
            if self._stopping_since is None:
                self.maintenance.tick()
            if self._redis_down:
                log.warning("pool %s: Redis is reachable again", self.name)
                self._redis_down = False
        except redis.RedisError as exc:
            if not self._redis_down:
                if isinstance(exc, redis.exceptions.OutOfMemoryError):
                    log.error("pool %s: Redis is full (maxmemory) and refuses writes; jobs wait to write their "
                              "state until it takes writes again", self.name)
                else:
                    log.error("pool %s: Redis unreachable (%s); workers wait and reconnect", self.name, exc)
                self._redis_down = True

    def _busy(self) -> dict[str, tuple[int, int]]:
        """job id → (slot index, child pid) of every running job."""
        by_index = {index: pid for pid, (index, _, _) in self.children.items()}
        return {job_id: (index, by_index[index]) for index in by_index if (job_id := self.slots.get(index))}

    def _spawn(self, index: int) -> None:
        self._generation += 1
        name = f"{self.name}.{index}.{self._generation}"
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                code = self._child_main(index, name, parent)
            except BaseException:
                log.exception("worker %s crashed", name)
            finally:
                os._exit(code)
        self.children[pid] = (index, name, time.monotonic())

    def _child_main(self, index: int, name: str, parent: int) -> int:
        die_with_parent(parent)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self._connection = None
        connection = connect_to(self.config, blocking=True)
        wait_for_redis(connection, parent)
        runtime = Runtime(self.config, connection, self.registry, worker_name=name, pool_name=self.name)
        install(runtime)
        ChildBeat(runtime).start()
        signal.signal(signal.SIGUSR1, lambda *_: relay_cancel(runtime, self.slots.cancel_asked(index)))
        worker = CollectorWorker(
            [self.config.queue_name], connection=connection, name=name, serializer=JSONSerializer,
            queue_class=claiming_queue(name, age_s=self.config.priority_age_s),
        )
        worker.slots, worker.slot_index, worker.runtime, worker.parent_pid = self.slots, index, runtime, parent
        worker.work(burst=self.burst, logging_level=self.config.log_level)
        return 0

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            index, name, born = self.children.pop(pid)
            clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            job_id = self.slots.get(index)
            self.slots.clear(index)
            kind, cause = self._kill_reasons.pop(pid, ("died", describe_exit(status)))
            if not clean:
                # A kill the shutdown ordered is what the operator asked for: a warning, not an error to alert on.
                (log.warning if kind == "shutdown" else log.error)("pool %s: worker %s died: %s", self.name, name,
                                                                   cause)
            # Even with an empty slot: the child may have died between taking a job and noting it there.
            self._unsettled.append((job_id or "", kind, cause, name))
            if job_id or not clean:
                self._bury(name)
            if self._stopping_since is None and not (self.burst and clean):
                # A child that dies at birth (Redis down, a broken import) is respawned ever more slowly.
                _, backoff = self._respawn.get(index, (0.0, defaults.RESPAWN_BACKOFF_S))
                quick = time.monotonic() - born < 5.0
                self._respawn[index] = (time.monotonic() + (backoff if quick else 0.0),
                                        min(backoff * 2, 10.0) if quick else defaults.RESPAWN_BACKOFF_S)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for index, (when, backoff) in list(self._respawn.items()):
            if now >= when and self._stopping_since is None:
                self._spawn(index)
                self._respawn[index] = (float("inf"), backoff)   # kept for its backoff until the child lives
        for index, (when, _) in list(self._respawn.items()):
            alive = [born for _, (i, _, born) in self.children.items() if i == index]
            if when == float("inf") and alive and now - alive[0] > 5.0:
                del self._respawn[index]
            elif self._stopping_since is not None:
                del self._respawn[index]

    def _settle_pending(self) -> None:
        """Settle the jobs of dead children (retry, fail, stop or requeue): the one in its slot, and any it had
        taken off the queue without starting (its claims); kept for later while Redis is down."""
        while self._unsettled:
            job_id, kind, cause, name = self._unsettled[0]
            if job_id:
                recover(self.connection, self.config, job_id, kind=kind, cause=cause, worker_name=name)  # logs its line
                self._unsettled[0] = ("", kind, cause, name)
            # The jobs it had taken off the queue without starting: each settled job logs its own line.
            recover_claims(self.connection, self.config, name, cause=cause)
            self._unsettled.pop(0)

    def _bury(self, name: str) -> None:
        """Settle the job a dead child held at once, and remove the child's worker registration."""
        try:
            self._settle_pending()
            dead = CollectorWorker.find_by_key(
                CollectorWorker.redis_worker_namespace_prefix + name,
                connection=self.connection,
                serializer=JSONSerializer,
            )
            if dead is not None:
                dead.register_death()
        except redis.RedisError as exc:
            log.error("pool %s: could not record the death of %s yet (%s)", self.name, name, exc)
