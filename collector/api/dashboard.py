"""rq-dashboard mounted at `/rq`: every RQ read it makes uses JSON, and what is not JSON shows as unreadable.

rq-dashboard 0.9 passes no serializer to most of what it calls (`Job.fetch` in the job view and delete,
`requeue_job`, the registries behind its lists and its empty action, `Queue.all`), so RQ would unpickle
whatever a job hash holds. Every RQ name its module uses is rebound here to a class of `store/rq.py` (`REBOUND`)
that always reads with `DashboardSerializer`.
"""

from __future__ import annotations

import urllib.parse

import rq_dashboard
import rq_dashboard.web
from flask import Flask

from collector import defaults
from collector.store.rq import REBOUND, DashboardSerializer

PREFIX = "/rq"


def mount_dashboard(app: Flask, redis_url: str, *, connect_timeout_s: float = defaults.REDIS_CONNECT_TIMEOUT_S,
                    socket_timeout_s: float = defaults.REDIS_SOCKET_TIMEOUT_S) -> None:
    """Serve rq-dashboard under `/rq` of `app`; job descriptions carry no arguments. rq-dashboard makes its own
    Redis clients from the URL (one per request), so the API's timeouts travel in the URL's query."""
    for name, value in REBOUND.items():
        setattr(rq_dashboard.web, name, value)  # the module looks these names up at call time
    rq_dashboard.web.config.serializer = DashboardSerializer
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", with_timeouts(redis_url, connect_timeout_s, socket_timeout_s))
    app.config["RQ_DASHBOARD_SHOW_FULL_ARGS"] = False
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    rq_dashboard.web.setup_rq_connection(app)


def with_timeouts(redis_url: str, connect_timeout_s: float, socket_timeout_s: float) -> str:
    """`redis_url` with `socket_connect_timeout` and `socket_timeout` in its query (those it names already win)."""
    parts = urllib.parse.urlsplit(redis_url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.setdefault("socket_connect_timeout", str(connect_timeout_s))
    query.setdefault("socket_timeout", str(socket_timeout_s))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
