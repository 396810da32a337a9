"""Replicated writes: a transaction answered only once N replicas hold it (Redis `WAIT` on its own connection)."""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from collector.config import Config
from collector.errors import NotReplicatedError


class ReplicatedPipeline(Pipeline):
    """A MULTI/EXEC pipeline that, with `replicas` above 0, sends `WAIT replicas timeout` right after EXEC on the same
    connection: WAIT counts the replicas that acknowledged that connection's writes, so it must follow them there.
    `acknowledged` is then their number, or None when WAIT failed (the transaction is applied and must not be
    sent again, so a failed WAIT is not retried)."""

    def __init__(self, connection: Redis, *, replicas: int, timeout_s: float) -> None:
        super().__init__(connection.connection_pool, connection.response_callbacks, True, None)
        self.replicas = replicas
        self.timeout_ms = max(1, round(timeout_s * 1000))
        self.acknowledged: int | None = None
        self.failure: str | None = None  # why `acknowledged` is None: the error WAIT met

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> list[Any]:
        data = super()._execute_transaction(connection, commands, raise_on_error)
        if self.replicas > 0:
            try:
                connection.send_command("WAIT", self.replicas, self.timeout_ms)
                self.acknowledged = int(connection.read_response())
            except RedisError as exc:  # lost, or refused (a Redis without WAIT): counted as no replica
                self.acknowledged = None
                self.failure = type(exc).__name__
        return data

    def short_of(self, replicas: int) -> bool:
        """Whether fewer than `replicas` replicas acknowledged the transaction (never, when none are asked for)."""
        return replicas > 0 and (self.acknowledged or 0) < replicas


def not_replicated(config: Config, job_id: str, *, acknowledged: int | None,
                   failure: str | None = None) -> NotReplicatedError:
    """The 503 of a job written but not on enough replicas: it may still run; the client checks before resubmitting."""
    told = f"{acknowledged} acknowledged" if acknowledged is not None else f"no count came back ({failure})"
    return NotReplicatedError(
        f"job {job_id} was written to the primary, but COLLECTOR_REDIS_MIN_REPLICAS={config.redis_min_replicas} "
        f"replicas were asked to hold it within {config.redis_min_replicas_wait_s:g} s and {told}: if the primary "
        f"fails now the job may be lost, and otherwise it will run. Check with GET /execution/get?job_id={job_id} "
        "before submitting it again (a 404 there means it is not queued).",
        details={"job_id": job_id, "replicas_required": config.redis_min_replicas,
                 "replicas_acknowledged": acknowledged},
    )
