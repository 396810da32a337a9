"""Database engines for URLs a job gives (`sql_query`, the SQL storage backends), built in one place.

- The host passes the egress policy: a refused literal address at submit (`check_url`), the resolved address
  at connect time, and the connection goes to the address that was checked.
- Only an allow-list of URL query parameters is taken (no option file, init command, socket or host override).
- MySQL/MariaDB never allow LOAD DATA LOCAL (`local_infile` off, no CLIENT.LOCAL_FILES flag), whatever the URL.
- Statements are bounded by the job that runs them: each connection gets a server-side timeout of the job's
  remaining time (PostgreSQL `statement_timeout`, MariaDB `max_statement_time`, MySQL `max_execution_time`),
  and the statements of a job that is cancelled, times out or fails are cancelled on the server (PostgreSQL
  cancel request, MySQL/MariaDB `KILL QUERY` from a second connection, SQLite interrupt). The runner tells this
  module when a job starts and ends (`job_started`, `job_ended`); nothing else needs to know.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from collector import egress
from collector.errors import EgressError, SettingError

log = logging.getLogger(__name__)

# The driver each backend is reached with (the installed ones); a URL's own driver choice is replaced.
DRIVERS = {"mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql", "postgresql": "postgresql+psycopg",
           "sqlite": "sqlite+pysqlite"}
ALIASES = {"postgres": "postgresql"}
DEFAULT_PORTS = {"mysql": 3306, "mariadb": 3306, "postgresql": 5432}
# URL query parameters a job may give, by backend. Left out on purpose: anything naming a file on the worker
# (option files, certificates, passfile, service), a startup command or options, a socket, a host override,
# client flags and local_infile. PostgreSQL's `gssencmode` is taken (specs and schedules written with it stay
# valid) but always `disable` for a server a job names: GSSAPI is the worker's Kerberos identity. A named operator
# connection (`trusted`) may use any.
QUERY_PARAMETERS = {
    "mysql": frozenset({"charset", "collation", "connect_timeout", "read_timeout", "write_timeout",
                        "ssl_check_hostname"}),
    "postgresql": frozenset({"sslmode", "connect_timeout", "application_name", "client_encoding",
                             "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                             "target_session_attrs", "channel_binding", "gssencmode"}),
    "sqlite": frozenset({"timeout", "mode", "cache", "immutable", "uri"}),
}
QUERY_PARAMETERS["mariadb"] = QUERY_PARAMETERS["mysql"]
# The values each of them takes. A driver may paste a value into a statement of its own (PyMySQL sends
# `SET NAMES <charset> COLLATE <collation>` unquoted, before any guard sees a statement), so none is free text.
_WORD = r"[A-Za-z0-9_]{1,64}"
_NUMBER = r"[0-9]{1,9}(\.[0-9]{1,6})?"
_FLAG = r"(?i:true|false|yes|no|on|off|1|0)"
QUERY_VALUES = {name: re.compile(rule) for name, rule in {
    "charset": _WORD, "collation": _WORD, "connect_timeout": _NUMBER, "read_timeout": _NUMBER,
    "write_timeout": _NUMBER, "ssl_check_hostname": _FLAG,
    "sslmode": "disable|allow|prefer|require|verify-ca|verify-full", "application_name": r"[A-Za-z0-9_ .:@/+=-]{0,63}",
    "client_encoding": r"[A-Za-z0-9_-]{1,32}", "keepalives": "0|1", "keepalives_idle": _NUMBER,
    "keepalives_interval": _NUMBER, "keepalives_count": _NUMBER,
    "target_session_attrs": "any|read-write|read-only|primary|standby|prefer-standby",
    "channel_binding": "disable|prefer|require", "gssencmode": "disable|prefer|require",
    "timeout": _NUMBER, "mode": "ro|rw|rwc|memory", "cache": "shared|private", "immutable": _FLAG, "uri": _FLAG,
}.items()}
NO_FILE = "/nonexistent/collector-none"  # a path no file is at (Debian keeps /nonexistent absent on purpose)
NO_KERBEROS = "!gss,!sspi"            # libpq's require_auth: any authentication a server asks for but these
REQUIRE_AUTH_LIBPQ = 160000           # the libpq that has require_auth (psycopg[binary] ships a newer one)
CLIENT_LOCAL_FILES = 128              # MySQL protocol capability flag: the client may send local files
CONNECT_TIMEOUT_S = 10                # for the socket a checked connection opens, when the URL gives none
TIMEOUT_MARGIN_S = 1.0                # the server's statement timeout is this much past the job's own, so the
                                      # job's timeout reports first and the server's is the backstop
CLIENT_CHECK_INTERVAL_MS = 1000       # PostgreSQL 14+: a statement whose client is gone ends within this
WATCH_INTERVAL_S = 0.2                # how often a cancel or a passed deadline is looked for while a job runs


def backend_of(url: URL) -> str:
    name = url.get_backend_name()
    return ALIASES.get(name, name)


def check_url(value: str | URL, *, setting: str, backends: tuple[str, ...] = tuple(DRIVERS),
              host_setting: str | None = None, trusted: bool = False) -> URL:
    """At submit: the URL with its driver set, or `SettingError` (under `setting`, or `host_setting` for the
    host) for an unparsable URL, another backend, a refused query parameter or a refused literal address."""
    try:
        url = value if isinstance(value, URL) else make_url(value)
    except (ArgumentError, ValueError):
        raise SettingError(setting, "url is not a SQLAlchemy database URL (e.g. postgresql://user:pw@host/db, "
                                    "mysql://user:pw@host/db or sqlite:////path/to.db)") from None
    backend = backend_of(url)
    if backend not in backends:
        raise SettingError(setting, f"url must be a {' or '.join(backends)} URL, not {backend!r}")
    url = url.set(drivername=DRIVERS[backend])
    if trusted:
        return url
    refused = sorted(set(url.query) - QUERY_PARAMETERS[backend])
    if refused:
        raise SettingError(setting, f"url has query parameter(s) {refused} that a job may not set; allowed for "
                                    f"{backend}: {sorted(QUERY_PARAMETERS[backend])}")
    for name, value in url.query.items():
        if not isinstance(value, str):
            raise SettingError(setting, f"url gives the query parameter {name!r} more than once; give it once")
        if not QUERY_VALUES[name].fullmatch(value):
            raise SettingError(setting, f"url's query parameter {name!r} must match {QUERY_VALUES[name].pattern} "
                                        "(a name, a number or one of the listed words)")
    if backend != "sqlite":
        if url.host and "@" in url.host:  # the rest of a password (or user name) with an `@` not encoded
            if host_setting is not None:
                raise SettingError(host_setting, "the database host has an '@'; give the host name alone")
            raise SettingError(setting, "url has an '@' in its user name or password: write it as %40 "
                                        "(URL-encoded), e.g. postgresql://user:p%40ss@host/db")
        egress.current().check_host(url.host, setting=host_setting or setting, what="the database host",
                                    port=url.port or DEFAULT_PORTS[backend])
    return url


def create_engine(url: URL, *, trusted: bool = False, **kwargs: Any) -> Engine:
    """`sqlalchemy.create_engine` for a URL from `check_url`, with its connections checked and bounded.

    `trusted=True` (a named operator connection) skips the address check; LOCAL INFILE stays off and
    statements stay bounded by the job."""
    backend = backend_of(url)
    engine = sa.create_engine(url, **kwargs)
    policy = None if trusted else egress.current()
    if backend in ("mysql", "mariadb"):
        sa.event.listen(engine, "do_connect", _mysql_connector(policy))
    elif backend == "postgresql" and policy is not None:
        sa.event.listen(engine, "do_connect", _postgresql_connector(policy))
    sa.event.listen(engine, "connect", _bound(backend))
    return engine


def _mysql_connector(policy: egress.EgressPolicy | None) -> Callable[..., Any]:
    def connect(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        cparams["local_infile"] = False
        cparams["client_flag"] = int(cparams.get("client_flag", 0)) & ~CLIENT_LOCAL_FILES
        record.info["reconnect"] = (dialect.loaded_dbapi, list(cargs), dict(cparams), policy)
        return _mysql_connection(dialect.loaded_dbapi, cargs, cparams, policy)

    return connect


def _mysql_connection(dbapi: Any, cargs: list[Any], cparams: dict[str, Any],
                      policy: egress.EgressPolicy | None) -> Any:
    if policy is None:
        return dbapi.connect(*cargs, **cparams)
    connection = dbapi.connect(*cargs, **cparams, defer_connect=True)
    host, port = cparams.get("host") or "localhost", int(cparams.get("port") or DEFAULT_PORTS["mysql"])
    sock = policy.connect((host, port), timeout=cparams.get("connect_timeout") or CONNECT_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    connection.connect(sock=sock)      # TLS, when asked for, still verifies the host name
    return connection


def _postgresql_connector(policy: egress.EgressPolicy) -> Callable[..., Any]:
    def connect(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        host, port = cparams.get("host") or "localhost", int(cparams.get("port") or DEFAULT_PORTS["postgresql"])
        _, sockaddr = policy.addresses(str(host), port)[0]
        # libpq connects to hostaddr and still uses host for TLS verification; the port is the one checked (left
        # out, libpq would take PGPORT or a service file's).
        cparams["hostaddr"] = str(sockaddr[0])
        cparams["port"] = str(port)
        # libpq fills what the URL leaves out from the worker's environment and files: a password (PGPASSWORD, a
        # password file, a service file) and a client certificate (PGSSLCERT, ~/.postgresql): the operator's, sent
        # to whichever server the job names. A server the job chose gets only the password the job gave; the files
        # named are ones that never exist (libpq skips those silently; /dev/null it warns about on stderr).
        cparams["password"] = cparams.get("password") or ""
        for name in ("passfile", "sslcert", "sslkey"):
            cparams[name] = NO_FILE
        # Nor the worker's Kerberos identity: libpq offers GSSAPI encryption, and answers a server that asks for
        # GSSAPI (or SSPI) authentication, with the worker's own credentials when it has any.
        if (libpq := psycopg_pq_version()) < REQUIRE_AUTH_LIBPQ:
            raise EgressError(f"this worker's libpq ({libpq}) is older than 16 and cannot refuse a "
                              "server's request for its Kerberos identity; a job may connect only to PostgreSQL "
                              "servers the operator names as connections (or install psycopg[binary])")
        cparams["gssencmode"] = "disable"
        cparams["require_auth"] = NO_KERBEROS

    return connect


@functools.cache
def psycopg_pq_version() -> int:
    """The version of the libpq psycopg uses (160000 for 16.0), read once; 0 without psycopg."""
    try:
        import psycopg
    except ImportError:
        return 0
    return int(psycopg.pq.version())


def _bound(backend: str) -> Callable[[Any, Any], None]:
    """On each new connection: the job's remaining time as the server's statement timeout, and a way to cancel."""

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        remaining = remaining_s()
        if backend == "postgresql":
            with dbapi_connection.cursor() as cursor:
                if remaining is not None:
                    cursor.execute("SELECT set_config('statement_timeout', %s, false)", (str(_ms(remaining)),))
                if dbapi_connection.info.server_version >= 140000:
                    cursor.execute("SELECT set_config('client_connection_check_interval', %s, false)",
                                   (str(CLIENT_CHECK_INTERVAL_MS),))
            dbapi_connection.commit()
            register(dbapi_connection.pgconn.get_cancel().cancel)
        elif backend in ("mysql", "mariadb"):
            mariadb = "mariadb" in dbapi_connection.get_server_info().lower()
            if remaining is not None:
                try:
                    with dbapi_connection.cursor() as cursor:
                        if mariadb:
                            cursor.execute(f"SET SESSION max_statement_time = {_ms(remaining) / 1000:.3f}")
                        else:  # MySQL bounds SELECTs only, which is what a job runs for long
                            cursor.execute(f"SET SESSION max_execution_time = {_ms(remaining)}")
                except pymysql.err.MySQLError as exc:  # a server too old for either: the cancel still holds
                    log.warning("no server-side statement timeout on this %s server: %s", backend, exc)
            reconnect = record.info.get("reconnect")
            if reconnect is not None:
                register(_killer(reconnect, dbapi_connection.thread_id()))
        elif backend == "sqlite":
            register(dbapi_connection.interrupt)

    return on_connect


def _ms(remaining: float) -> int:
    return max(1, math.ceil((remaining + TIMEOUT_MARGIN_S) * 1000))


def _killer(reconnect: tuple[Any, list[Any], dict[str, Any], Any], thread_id: int) -> Callable[[], None]:
    """`KILL QUERY` for one MySQL/MariaDB connection, sent over a second connection made the same way."""

    def kill() -> None:
        dbapi, cargs, cparams, policy = reconnect
        connection = _mysql_connection(dbapi, cargs, {**cparams, "autocommit": True}, policy)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"KILL QUERY {int(thread_id)}")
        finally:
            connection.close()

    return kill


# -- the job that runs in this process: one at a time (a worker runs job after job)

_lock = threading.Lock()
_wake = threading.Event()
_job: dict[str, Any] = {}        # deadline (monotonic or None), cancelled (callable); empty between jobs
_cancels: list[Callable[[], None]] = []
_watcher: threading.Thread | None = None


def job_started(*, timeout_s: float | None, cancelled: Callable[[], bool]) -> None:
    """Called by the runner as a job starts: statements opened from now on are bound to it."""
    with _lock:
        _job.update(deadline=time.monotonic() + timeout_s if timeout_s else None, cancelled=cancelled)
        _cancels.clear()


def job_ended(*, cancel: bool) -> None:
    """Called by the runner as the job ends; `cancel` (it did not finish) cancels what may still run on a server."""
    with _lock:
        pending = list(_cancels) if cancel else []
        _cancels.clear()
        _job.clear()
    _wake.set()
    _fire(pending)


def remaining_s() -> float | None:
    """Seconds left of the running job's timeout; None outside a job or for a job without one."""
    with _lock:
        deadline = _job.get("deadline")
    return None if deadline is None else deadline - time.monotonic()


def register(cancel: Callable[[], None]) -> None:
    """Keep `cancel` for the running job's statements on a new connection (dropped when no job runs)."""
    global _watcher
    with _lock:
        if not _job:
            return
        _cancels.append(cancel)
        if _watcher is None or not _watcher.is_alive():
            _wake.clear()
            _watcher = threading.Thread(target=_watch, name="statement-watch", daemon=True)
            _watcher.start()


def _watch() -> None:
    """While a job holds connections: cancel their statements once the job is cancelled or past its deadline
    (a thread, because the job's own thread is blocked in the driver waiting for the statement)."""
    while True:
        _wake.wait(WATCH_INTERVAL_S)
        _wake.clear()
        with _lock:
            if not _job:
                return
            deadline, cancelled = _job.get("deadline"), _job["cancelled"]
            due = cancelled() or (deadline is not None and time.monotonic() > deadline + TIMEOUT_MARGIN_S)
            pending = list(_cancels) if due else []
            if due:
                _cancels.clear()
        _fire(pending)


def _fire(cancels: list[Callable[[], None]]) -> None:
    for cancel in cancels:
        try:
            cancel()
        except Exception as exc:  # the connection may be gone already: nothing runs there then
            log.debug("cancelling a statement failed: %s: %s", type(exc).__name__, exc)


__all__ = ["check_url", "create_engine", "job_ended", "job_started", "remaining_s"]
