"""`/metrics`: job counters, durations, queue depth, live workers and Redis round-trip time for Prometheus."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collector.api.services import services
from collector.store.metrics import RedisMetrics
from collector.store.rq import RQ

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions.get("collector.metrics")
    if registry is None:  # one registry per app: the collector reads Redis afresh on every scrape
        svc = services()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RedisMetrics(svc.connection, svc.store.keys, rq=RQ(svc.connection, svc.config),
                                       loss_watch=svc.loss_watch))
        current_app.extensions["collector.metrics"] = registry
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
