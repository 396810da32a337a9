"""The Flask application factory: `create_app()` is the app `serve` and `up` serve (any WSGI server can run it)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask
from werkzeug.exceptions import HTTPException

from collector import egress
from collector.api import console, docs, execution, metrics, platforms, processes, schedules, state, system
from collector.api.auth import install_auth
from collector.api.dashboard import mount_dashboard
from collector.api.services import Services, services
from collector.api.sessions import install_sessions
from collector.api.tokens import configured_tokens
from collector.config import Config
from collector.errors import CollectorError
from collector.logs import setup
from collector.masking import install_log_masking
from collector.specs.registry import Registry
from collector.specs.secrets import require_secret_key
from collector.store.connection import connect_to
from collector.store.records import redis_down, redis_full
from collector.store.rq_dashboard import refuse_pickle
from collector.workflows.reaper import ReaperThread

log = logging.getLogger(__name__)


def create_app(
    config: Config | None = None,
    *,
    connection: redis.Redis | None = None,
    registry: Registry | None = None,
    dashboard: bool = True,
    reaper: bool | None = None,
) -> Flask:
    """Build the API. Without arguments everything comes from `COLLECTOR_*` environment variables.

    `reaper` runs a thread that recovers the jobs of dead worker pools and requeues due retries, so that
    happens even when no pool is alive; by default it runs when the config comes from the environment
    (`collector serve`, gunicorn), not for an app built around a given config (tests)."""
    if reaper is None:
        reaper = config is None
    config = config or Config.from_env()
    if not logging.getLogger().handlers:  # under gunicorn nothing has set logging up: do as the CLI does
        setup(config)
    if connection is None:
        if not config.redis_configured:
            raise CollectorError(
                "COLLECTOR_REDIS_URL is not set; point it at Redis (or COLLECTOR_REDIS_SENTINELS at the sentinels "
                "watching it), or run `collector up` for an embedded one"
            )
        connection = connect_to(config)
    registry = registry or Registry.discover(config.platforms_package)
    install_log_masking()  # gunicorn runs create_app() without the CLI, which installs it too
    refuse_pickle()  # RQ's pickle fallback, wherever a serializer is forgotten, fails instead of unpickling

    require_secret_key(config, registry, process="API")
    for platform in registry.platforms.values():
        if (platform.timeout_s or 0) > config.max_timeout_s:
            log.warning("platform %s: TIMEOUT_S=%s is over COLLECTOR_MAX_TIMEOUT_S=%s; its jobs get %s s",
                        platform.id, platform.timeout_s, config.max_timeout_s, config.max_timeout_s)
    egress.install(egress.EgressPolicy.from_config(config))  # submit refuses literal addresses it forbids
    tokens = configured_tokens(config)

    app = Flask("collector")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["collector"] = Services(config, connection, registry)
    install_auth(app, tokens)
    install_sessions(app, config)

    app.register_blueprint(system.blueprint)
    app.register_blueprint(platforms.blueprint)
    app.register_blueprint(execution.blueprint)
    app.register_blueprint(schedules.blueprint)
    app.register_blueprint(state.blueprint)
    app.register_blueprint(processes.blueprint)
    app.register_blueprint(docs.blueprint)
    app.register_blueprint(metrics.blueprint)
    app.register_blueprint(console.blueprint)
    if dashboard:
        mount_dashboard(app, config.redis_where, queue_name=config.queue_name, connection=connection)
    _register_error_handlers(app)
    if reaper and config.reap_interval_s > 0:
        thread = ReaperThread(connection, config)
        app.extensions["collector_reaper"] = thread
        thread.start()
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CollectorError)
    def collector_error(exc: CollectorError) -> tuple[dict[str, Any], int, dict[str, str]]:
        return exc.to_dict(), exc.status, getattr(exc, "headers", {})

    @app.errorhandler(redis.exceptions.OutOfMemoryError)
    def redis_full_error(exc: Exception) -> tuple[dict[str, Any], int]:
        error = redis_full(services().config)  # a write refused inside MULTI aborts the whole transaction
        return error.to_dict(), error.status

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def redis_error(exc: Exception) -> tuple[dict[str, Any], int]:
        error = redis_down(services().config, exc)
        return error.to_dict(), error.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[dict[str, Any], int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        hint = {
            404: "see GET /platforms/get and the README for the endpoints",
            405: "check the HTTP method in the README's API table",
            413: f"send at most {services().config.max_body_bytes} bytes (COLLECTOR_MAX_BODY_BYTES)",
        }.get(exc.code or 0, "")
        message = f"{exc.description}" + (f"; {hint}" if hint else "")
        return {"error": code, "message": message, "details": {}}, exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[dict[str, Any], int]:
        log.exception("unexpected error")
        return {
            "error": "internal_error",
            "message": f"the service failed unexpectedly ({type(exc).__name__}); the logs have the details",
            "details": {},
        }, 500
