"""rq-dashboard mounted at `/rq`, reading RQ's JSON-serialized jobs."""

from __future__ import annotations

from typing import Any

import rq_dashboard
import rq_dashboard.web
from flask import Flask
from rq.serializers import JSONSerializer
from rq.worker import Worker

PREFIX = "/rq"


class JSONWorker(Worker):
    """`Worker.all` with the JSON serializer: the dashboard's worker view fetches current jobs through it."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Worker]:  # type: ignore[override]
        kwargs.setdefault("serializer", JSONSerializer)
        return Worker.all(*args, **kwargs)


def mount_dashboard(app: Flask, redis_url: str) -> None:
    """Serve rq-dashboard under `/rq` of `app`; job descriptions carry no arguments."""
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.Worker = JSONWorker  # the module looks `Worker` up at call time
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", redis_url)
    app.config["RQ_DASHBOARD_SHOW_FULL_ARGS"] = False
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    rq_dashboard.web.setup_rq_connection(app)
