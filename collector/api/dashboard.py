"""rq-dashboard mounted at `/rq`, reading RQ's JSON-serialized jobs."""

from __future__ import annotations

import rq_dashboard
import rq_dashboard.web
from flask import Flask

from collector.store.rq import JSONSerializer, JSONWorker

PREFIX = "/rq"


def mount_dashboard(app: Flask, redis_url: str) -> None:
    """Serve rq-dashboard under `/rq` of `app`; job descriptions carry no arguments."""
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.Worker = JSONWorker  # the module looks `Worker` up at call time
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", redis_url)
    app.config["RQ_DASHBOARD_SHOW_FULL_ARGS"] = False
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    rq_dashboard.web.setup_rq_connection(app)
