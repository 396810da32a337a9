"""What one job costs in Redis: every key that names it, and the bytes each holds (`MEMORY USAGE`)."""

from __future__ import annotations

from redis import Redis


def job_footprint(connection: Redis, job_id: str) -> dict[str, int]:
    """Every key whose name holds `job_id` (collector's record, events and datasets; RQ's job hash, results and
    executions), with the bytes Redis spends on each, all of it counted (`MEMORY USAGE ... SAMPLES 0`)."""
    found: dict[str, int] = {}
    for raw in connection.scan_iter(match=f"*{job_id}*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        found[key] = int(connection.memory_usage(key, samples=0) or 0)
    return found
