"""`/system/alive`: liveness (GET) and diagnostics of every connected service (POST); `/system/ready`: readiness
(whether this API can take jobs now: Redis answers)."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint

from collector import __version__
from collector.api.services import Services, services
from collector.store.rq import RQ

blueprint = Blueprint("system", __name__)


@blueprint.get("/system/alive")
def alive() -> dict[str, Any]:
    return {"alive": True, "version": __version__}


@blueprint.get("/system/ready")
def ready() -> tuple[dict[str, Any], int]:
    body = readiness(services())
    return body, 200 if body["ready"] else 503


@blueprint.post("/system/alive")
def diagnostics() -> tuple[dict[str, Any], int]:
    body = diagnose(services())
    return body, 200 if body["healthy"] else 503


def readiness(svc: Services) -> dict[str, Any]:
    """Whether this API can serve jobs now: Redis answers a PING (liveness, `GET /system/alive`, stays 200 while
    it does not, so an orchestrator keeps the process and stops sending it traffic instead of restarting it)."""
    body: dict[str, Any] = {"ready": True, "version": __version__}
    try:
        svc.connection.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        body["ready"] = False
        body["reason"] = (f"Redis at {svc.config.redis_where} is unreachable ({type(exc).__name__}); "
                          f"jobs can be neither queued nor read: check that Redis runs and {svc.config.redis_setting}")
    return body


def diagnose(svc: Services) -> dict[str, Any]:
    """Redis (ping, version, memory, eviction policy), the queue's registries, the workers, the platforms, and
    whether Redis lost its data (`data_loss`, with when it was noticed)."""
    body: dict[str, Any] = {"alive": True, "version": __version__, "healthy": True, "status": "ok", "degraded": []}
    body["platforms"] = {"count": len(svc.registry.platforms), "broken": svc.registry.broken}
    # Degraded: the service works, but not all of it (a platform's file failed to load: its jobs are refused).
    body["degraded"] += [f"platform {name!r} is not available: {svc.registry.file_of(name)} failed to load ({why})"
                         for name, why in sorted(svc.registry.broken.items())]
    try:
        body["redis"] = _redis(svc.connection)
        body["redis"]["url"] = svc.config.redis_where
        rq = RQ(svc.connection, svc.config)
        body["queues"] = {rq.queue.name: rq.counts("queued", "started", "failed", "finished")}
        workers = rq.workers()
        body["workers"] = {"count": len(workers), "list": workers}
        body["data_loss"] = svc.loss_watch.report()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        body["healthy"] = False
        body["redis"] = {
            "ok": False,
            "url": svc.config.redis_where,
            "error": f"{type(exc).__name__}: unreachable; check that Redis runs and {svc.config.redis_setting}",
        }
    body["status"] = "down" if not body["healthy"] else "degraded" if body["degraded"] else "ok"
    return body


def _redis(connection: redis.Redis) -> dict[str, Any]:
    started = time.perf_counter()
    connection.ping()
    ping_ms = round((time.perf_counter() - started) * 1000, 3)
    try:
        info = connection.info()
    except redis.ResponseError:  # servers that disable INFO (managed Redis, fakes) still answer PING
        info = {}
    return {
        "ok": True,
        "ping_ms": ping_ms,
        "version": info.get("redis_version"),
        "used_memory": info.get("used_memory_human"),
        "maxmemory_policy": info.get("maxmemory_policy"),
    }
