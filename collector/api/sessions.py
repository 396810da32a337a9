"""The console's access: its signed session cookie, the CSRF token of its forms, the scope of each page and form.

The cookie is HttpOnly and SameSite=Strict, signed with a key derived from `COLLECTOR_SECRET_KEY` (so every API
process behind one address accepts it); it holds the token's SHA-256 digest, never the token, so removing or
replacing a token in the configuration ends the sessions it opened. It holds a random session id too: signing out
notes that id in Redis until the cookie would expire, so a copy of the cookie kept from before is refused. Without a
secret key the signing key is random per process: sessions then end when the process does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from typing import Any

from flask import Flask, current_app, request, session
from flask.sessions import SecureCookieSessionInterface

from collector.api.tokens import Token
from collector.config import Config
from collector.store import console_sessions

log = logging.getLogger(__name__)

COOKIE = "collector_console"
LIFETIME = dt.timedelta(hours=12)  # a session signs in again after this
CSRF_FIELD = "csrf_token"
SESSION_ID = "sid"  # the session's own random id, noted in Redis when it signs out
# The console's pages and forms (`/ui/`): reading needs `read`, each form the scope of the API call it makes.
CONSOLE_SCOPES: dict[str, str] = {
    **{f"console.{page}": "read" for page in ("home", "jobs", "job", "inbox", "processes", "process", "schedules",
                                                "logout")},
    "console.submit_form": "submit",
    "console.submit": "submit",
    "console.cancel": "operate",
    "console.retry": "operate",
    "console.resume": "operate",
    "console.ack": "operate",
    "console.rerun": "operate",
    "console.finalize": "operate",
    "console.schedule_pause": "admin",
    "console.schedule_resume": "admin",
    "console.schedule_delete": "admin",
}
CONSOLE_OPEN = frozenset({"console.login", "console.static"})  # signing in, and the stylesheet of its page
SESSION_PAGES = ("/ui", "/execution/stream")  # where the console's session cookie stands for a token


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed cookie sessions, the cookie marked Secure whenever the page came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure or super().get_cookie_secure(app))


def install_sessions(app: Flask, config: Config) -> None:
    """Sign the console's cookie with a key derived from the service's secret key; set its attributes."""
    if config.secret_key:
        app.secret_key = hmac.new(config.secret_key.encode(), b"collector-console-session", hashlib.sha256).hexdigest()
    else:
        app.secret_key = secrets.token_hex(32)
        log.info("no COLLECTOR_SECRET_KEY: console sessions are signed with a key of this process and end with it")
    app.session_interface = ConsoleSessions()
    app.config.update(SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      PERMANENT_SESSION_LIFETIME=LIFETIME, SESSION_REFRESH_EACH_REQUEST=False)


def session_token(tokens: Sequence[Token]) -> Token | None:
    """The configured token this request's session signed in with; None without a session, once its token is
    removed from the configuration, or once it signed out."""
    held, session_id = session.get("token"), session.get(SESSION_ID)
    if not isinstance(held, str) or not isinstance(session_id, str):
        return None
    found = None
    for token in tokens:  # every token is compared, whichever matches
        if hmac.compare_digest(held.encode(), token.digest.hex().encode()):
            found = token
    if found is None or console_sessions.ended(*_store(), session_id):
        return None
    return found


def sign_in(token: Token) -> None:
    """Start a fresh session for `token` (a new CSRF token too: one fixed before signing in is worthless)."""
    session.clear()
    session.permanent = True
    session["token"] = token.digest.hex()
    session[SESSION_ID] = secrets.token_urlsafe(18)
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def sign_out() -> None:
    """End the session: the cookie is cleared, and its id noted as signed out, so a copy of it is refused too."""
    session_id = session.get(SESSION_ID)
    if isinstance(session_id, str):
        console_sessions.end(*_store(), session_id, ttl_s=int(LIFETIME.total_seconds()))
    session.clear()


def _store() -> tuple[Any, Any]:
    """The API's Redis connection and its key names."""
    shared = current_app.extensions["collector"]
    return shared.connection, shared.store.keys


def csrf_token() -> str:
    """The session's CSRF token, made on first use; every console form carries it in a hidden field."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def csrf_valid() -> bool:
    """Whether the posted form carries this session's CSRF token (a form on another site cannot know it, and
    SameSite=Strict keeps the cookie off its requests)."""
    given = request.form.get(CSRF_FIELD, "")
    held = session.get(CSRF_FIELD)
    return isinstance(held, str) and bool(given) and hmac.compare_digest(given.encode(), held.encode())
