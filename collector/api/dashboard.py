"""rq-dashboard mounted at `/rq`: every RQ read it makes uses JSON, and what is not JSON shows as unreadable.

rq-dashboard 0.9 passes no serializer to most of what it calls (`Job.fetch` in the job view and delete,
`requeue_job`, the registries behind its lists and its empty action, `Queue.all`), so RQ would unpickle
whatever a job hash holds. Every RQ name its module uses is rebound here to a class of `store/rq.py` (`REBOUND`)
that always reads with `DashboardSerializer`.
"""

from __future__ import annotations

import functools
from typing import Any

import rq_dashboard
import rq_dashboard.web
from flask import Flask, redirect, url_for

from collector.store.rq import REBOUND, DashboardSerializer

PREFIX = "/rq"


def mount_dashboard(app: Flask, redis_url: str, *, queue_name: str) -> None:
    """Serve rq-dashboard under `/rq` of `app`; job descriptions carry no arguments; its Jobs tab opens on
    collector's queue `queue_name` (rq-dashboard's own default is RQ's `default` queue, always empty here)."""
    for name, value in REBOUND.items():
        setattr(rq_dashboard.web, name, value)  # the module looks these names up at call time
    rq_dashboard.web.config.serializer = DashboardSerializer
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", redis_url)
    app.config["RQ_DASHBOARD_SHOW_FULL_ARGS"] = False
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    rq_dashboard.web.setup_rq_connection(app)
    endpoint = f"{rq_dashboard.blueprint.name}.jobs_overview"
    jobs_overview = app.view_functions[endpoint]
    home = queue_name

    @functools.wraps(jobs_overview)
    def on_collectors_queue(instance_number: int, queue_name: str | None = None, **rest: Any) -> Any:
        if queue_name is None:  # `/rq/0/view/jobs`, where the navigation bar's Jobs tab points
            return redirect(url_for(endpoint, instance_number=instance_number, queue_name=home,
                                    registry_name="queued", per_page=8, order="asc", page=1))
        return jobs_overview(instance_number=instance_number, queue_name=queue_name, **rest)

    app.view_functions[endpoint] = on_collectors_queue
