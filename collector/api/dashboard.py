"""rq-dashboard mounted at `/rq`: every RQ read it makes uses JSON, and what is not JSON shows as unreadable.

rq-dashboard 0.9 passes no serializer to most of what it calls (`Job.fetch` in the job view and delete,
`requeue_job`, the registries behind its lists and its empty action, `Queue.all`), so RQ would unpickle
whatever a job hash holds. Every RQ name its module uses is rebound here to a class of `store/rq_dashboard.py`
(`REBOUND`) that always reads with `DashboardSerializer`.

Its actions on jobs go through collector's own: Requeue (one job, or every failed one) retries by hand as
`POST /execution/retry` does, and Delete of a job that has not ended cancels it as `POST /execution/cancel` does.
"""

from __future__ import annotations

import functools
import html
from typing import Any

import rq_dashboard
import rq_dashboard.web
from flask import Flask, current_app, jsonify, redirect, url_for
from flask.typing import ResponseReturnValue
from redis import Redis

from collector.api.auth import caller
from collector.api.services import services
from collector.store.rq_dashboard import REBOUND, DashboardSerializer, job_data

PREFIX = "/rq"
BLUEPRINT = "rq_dashboard"  # the name rq-dashboard registers its views under


def mount_dashboard(app: Flask, shown_as: str, *, queue_name: str, connection: Redis) -> None:
    """Serve rq-dashboard under `/rq` of `app`, reading through `connection` (the API's: its timeouts, its password,
    and through Sentinel the current primary); its page names the Redis `shown_as` (passwords masked: rq-dashboard
    would show the URL it is given, a password in its query included). Job descriptions carry no arguments; its
    Jobs tab opens on collector's queue `queue_name` (rq-dashboard's own default is RQ's `default` queue, always
    empty here)."""
    for name, value in REBOUND.items():
        setattr(rq_dashboard.web, name, value)  # the module looks these names up at call time
    rq_dashboard.web.config.serializer = DashboardSerializer
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", shown_as)
    app.config["RQ_DASHBOARD_SHOW_FULL_ARGS"] = False
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    use_connection(app, connection)
    endpoint = f"{BLUEPRINT}.jobs_overview"
    jobs_overview = app.view_functions[endpoint]
    home = queue_name

    @functools.wraps(jobs_overview)
    def on_collectors_queue(instance_number: int, queue_name: str | None = None, **rest: Any) -> Any:
        if queue_name is None:  # `/rq/0/view/jobs`, where the navigation bar's Jobs tab points
            return redirect(url_for(endpoint, instance_number=instance_number, queue_name=home,
                                    registry_name="queued", per_page=8, order="asc", page=1))
        return jobs_overview(instance_number=instance_number, queue_name=queue_name, **rest)

    app.view_functions[endpoint] = on_collectors_queue

    delete = app.view_functions[f"{BLUEPRINT}.delete_job_view"]

    def delete_job(job_id: str, registry: object = None) -> ResponseReturnValue:
        """A job that has not ended is canceled (a running one stops); an ended one is deleted from RQ."""
        if services().cancel_unless_ended(job_id, by=caller(), reason="deleted in the dashboard"):
            return jsonify(status="OK")
        return delete(job_id=job_id)

    app.view_functions[f"{BLUEPRINT}.job_info"] = escaped_job_info(app.view_functions[f"{BLUEPRINT}.job_info"])
    app.view_functions[f"{BLUEPRINT}.requeue_job_view"] = requeue_job
    app.view_functions[f"{BLUEPRINT}.requeue_all"] = requeue_all
    app.view_functions[f"{BLUEPRINT}.delete_job_view"] = delete_job
    app.view_functions[f"{BLUEPRINT}.empty_queue"] = unless_delete_disabled(empty_list)
    app.view_functions[f"{BLUEPRINT}.compact_queue"] = unless_delete_disabled(compact_queue)


def use_connection(app: Flask, connection: Redis) -> None:
    """rq-dashboard reads through `connection` on every request, in place of the client it would build from its URL
    (its `push_rq_connection`, which runs before each of its views)."""
    app.config["RQ_DASHBOARD_REDIS_URL"] = (app.config["RQ_DASHBOARD_REDIS_URL"],)
    app.redis_conn = connection  # type: ignore[attr-defined]

    def push_connection() -> None:
        current_app.redis_conn = connection  # type: ignore[attr-defined]

    hooks = app.before_request_funcs.setdefault(BLUEPRINT, [])
    hooks[:] = [push_connection if hook is rq_dashboard.web.push_rq_connection else hook for hook in hooks]


def escaped_job_info(job_info: Any) -> Any:
    """rq-dashboard's job data with every text HTML-escaped: its job page puts the fields (the error a job ended
    with, its description, result and meta, which a client's spec can fill) into the page as HTML, unescaped,
    where its jobs list escapes them. A job that is gone is a 404, not its 500."""
    raw = job_info.__wrapped__  # the view's dict, before rq-dashboard makes it JSON

    @functools.wraps(job_info)
    def view(instance_number: int, job_id: str) -> ResponseReturnValue:
        data = job_data(raw, instance_number=instance_number, job_id=job_id)
        if data is None:
            return jsonify(error="not_found", message=f"no job {job_id!r} in RQ (ended and expired, or never "
                                                      "queued)"), 404
        return jsonify(html_escaped(data)), 200, {"Cache-Control": "no-store"}

    return view


def html_escaped(value: Any) -> Any:
    """`value` with each string in it (keys aside) HTML-escaped."""
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {key: html_escaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [html_escaped(item) for item in value]
    return value


def requeue_job(job_id: str) -> ResponseReturnValue:
    """Requeue: retry by hand, from the job's last checkpoint; a job that cannot be is answered with the reason."""
    answer = services().retry(job_id, by=caller())
    return jsonify({**answer, "status": "OK", "job_status": answer["status"]})  # the dashboard reads `status`


def requeue_all(queue_name: str) -> ResponseReturnValue:
    """Requeue All: retry every failed job by hand; those that cannot be are skipped."""
    return jsonify(status="OK", **services().retry_failed(by=caller()))


def empty_list(queue_name: str, registry_name: str) -> ResponseReturnValue:
    """Empty: a job that has not ended is canceled, as Delete does; an ended one deleted."""
    return jsonify(status="OK", **services().empty_list(queue_name, registry_name, by=caller()))


def compact_queue(queue_name: str) -> ResponseReturnValue:
    """Compact: ids of jobs that are gone leave the queue, in one step."""
    return jsonify(status="OK", **services().compact_queue(queue_name))


def unless_delete_disabled(view: Any) -> Any:
    """`view`, unless the operator turned rq-dashboard's deleting actions off (its own answer then)."""

    @functools.wraps(view)
    def guarded(**arguments: Any) -> ResponseReturnValue:
        if current_app.config.get("RQ_DASHBOARD_DISABLE_DELETE"):
            return jsonify(status="DISABLED")
        return view(**arguments)

    return guarded
