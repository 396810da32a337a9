"""Database URLs a job gives: the host's egress check, the allowed query parameters, the read-only guard,
and statements stopped when their job is cancelled."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import struct
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from collector.errors import EgressError, SettingError
from collector.resources import databases
from collector.resources.sql_guard import check_query


def submit(client: FlaskClient, settings: dict[str, Any], platform_id: str = "sql_query") -> tuple[int, Any]:
    response = client.post("/execution/run", json={"platform_id": platform_id, "settings": settings})
    return response.status_code, response.get_json()


NOT_ALLOWED, NOT_A_NAME = "may not set", "must match"


@pytest.mark.parametrize(("url", "refused", "why"), [
    ("mysql://u:pw@db.example.com/shop?local_infile=1", "local_infile", NOT_ALLOWED),
    ("mariadb://u@db.example.com/shop?init_command=SET+GLOBAL+x%3D1", "init_command", NOT_ALLOWED),
    ("mysql://u@db.example.com/shop?read_default_file=/etc/mysql/debian.cnf", "read_default_file", NOT_ALLOWED),
    ("mysql://u@db.example.com/shop?unix_socket=/run/mysqld/mysqld.sock", "unix_socket", NOT_ALLOWED),
    ("mysql://u@db.example.com/shop?client_flag=128", "client_flag", NOT_ALLOWED),
    ("mysql://u@db.example.com/shop?ssl_ca=/proc/self/environ", "ssl_ca", NOT_ALLOWED),
    ("postgresql://u@db.example.com/shop?options=-c+statement_timeout%3D0", "options", NOT_ALLOWED),
    ("postgresql://u@db.example.com/shop?host=/var/run/postgresql", "host", NOT_ALLOWED),
    ("postgresql://u@db.example.com/shop?service=prod", "service", NOT_ALLOWED),
    ("postgresql://u@db.example.com/shop?passfile=/root/.pgpass", "passfile", NOT_ALLOWED),
    ("postgresql://u@db.example.com/shop?sslmode=require&hostaddr=10.0.0.1", "hostaddr", NOT_ALLOWED),
    # PyMySQL pastes charset and collation into `SET NAMES ... COLLATE ...` at connect time, before the read-only
    # guard sees a statement: a value that is not a name would run SQL of the job's choosing on the server.
    ("mysql://u:pw@db.example.com/shop?charset=utf8mb4&collation=utf8mb4_general_ci%2C+%40x%3D%28SELECT+"
     "LOAD_FILE%28%27%2Fetc%2Fhostname%27%29%29", "collation", NOT_A_NAME),
    ("mariadb://u@db.example.com/shop?charset=utf8mb4+COLLATE+x%2C+%40x%3D1", "charset", NOT_A_NAME),
    ("mysql://u@db.example.com/shop?connect_timeout=5%3B+DROP", "connect_timeout", NOT_A_NAME),
    ("postgresql://u@db.example.com/shop?sslmode=allow%27+host%3D%27evil", "sslmode", NOT_A_NAME),
    ("postgresql://u@db.example.com/shop?application_name=a%27b", "application_name", NOT_A_NAME),
    ("postgresql://u@db.example.com/shop?client_encoding=UTF8%27%3B+x", "client_encoding", NOT_A_NAME),
])
def test_database_url_parameters_a_job_may_not_give_are_refused_by_name(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, url: str, refused: str, why: str
) -> None:
    """A parameter outside the allow-list, or a value that is not a name, a number or a listed word."""
    status, body = submit(client, {"url": url, "query": "SELECT 1"})
    assert status == 422 and list(body["details"]) == ["settings.url"], body
    message = body["details"]["settings.url"][0]
    assert f"'{refused}'" in message and why in message
    assert "pw" not in message
    assert fake_redis.dbsize() == 0


def test_a_database_url_parameter_given_twice_is_refused(client: FlaskClient) -> None:
    status, body = submit(client, {"url": "mysql://u@db.example.com/shop?charset=utf8mb4&charset=latin1",
                                   "query": "SELECT 1"})
    assert status == 422 and "'charset' more than once" in body["details"]["settings.url"][0], body


@pytest.mark.parametrize("url", ["sqlite:///:memory:?uri=true&mode=rwc&cache=shared", "sqlite://?mode=rwc"])
def test_an_in_memory_sqlite_url_takes_no_parameters(client: FlaskClient, url: str) -> None:
    """With `uri=true` SQLite opened `:memory:?cache=shared&mode=rwc` as a file where the worker runs."""
    status, body = submit(client, {"url": url, "query": "SELECT 1"})
    assert status == 422 and "takes no query parameters" in body["details"]["settings.url"][0], body


def test_the_usual_connection_parameters_are_accepted(client: FlaskClient) -> None:
    for url in ("mysql://u@db.example.com/shop?charset=utf8mb4&collation=utf8mb4_unicode_ci&connect_timeout=5"
                "&read_timeout=2.5&ssl_check_hostname=false",
                "postgresql://u@db.example.com/shop?sslmode=verify-full&connect_timeout=5&application_name=etl-1.2"
                "&client_encoding=UTF8&keepalives=1&target_session_attrs=read-write&gssencmode=disable",
                "sqlite:///:memory:", "sqlite://"):
        status, body = submit(client, {"url": url, "query": "SELECT 1"})
        assert status == 202, body


@pytest.mark.parametrize("host", ["169.254.169.254", "2852039166", "0xa9fea9fe", "[::ffff:169.254.169.254]",
                                  "127.0.0.1", "127.1", "10.0.0.8", "192.168.5.5", "[::1]"])
def test_a_database_host_that_is_a_refused_literal_is_a_422(client: FlaskClient, host: str) -> None:
    status, body = submit(client, {"url": f"postgresql://u:pw@{host}:5432/db", "query": "SELECT 1"})
    assert status == 422 and "COLLECTOR_EGRESS_ALLOW" in body["details"]["settings.url"][0], body
    status, body = submit(client, {"url": "https://example.com/x", "storage": {"type": "mysql", "settings": {
        "hostname": host.strip("[]"), "db": "d", "username": "u", "table": "t"}}}, platform_id="http_json")
    assert status == 422 and list(body["details"]) == ["settings.storage.settings.hostname"], body
    status, body = submit(client, {"url": "https://example.com/x", "storage": {"type": "postgresql", "settings": {
        "url": f"postgresql://u@{host}/d", "table": "t"}}}, platform_id="http_json")
    assert status == 422 and list(body["details"]) == ["settings.storage.settings.url"], body


def test_storage_urls_take_the_same_parameter_allow_list(client: FlaskClient) -> None:
    status, body = submit(client, {"url": "https://example.com/x", "storage": {"type": "mysql", "settings": {
        "url": "mysql://u@db.example.com/d?local_infile=1", "table": "t"}}}, platform_id="http_json")
    assert status == 422 and "'local_infile'" in body["details"]["settings.storage.settings.url"][0], body


def test_only_the_installed_backends_are_taken(client: FlaskClient) -> None:
    status, body = submit(client, {"url": "mssql+pyodbc://u@db.example.com/d", "query": "SELECT 1"})
    assert status == 422 and "not 'mssql'" in body["details"]["settings.url"][0], body


ATTACKS = [
    ("mysql://u@db.example.com/d", "SELECT * FROM publishers INTO OUTFILE '/var/lib/mysql-files/x.csv'"),
    ("mysql://u@db.example.com/d", "SELECT 'x' INTO DUMPFILE '/tmp/x.so'"),
    ("mysql://u@db.example.com/d", "select 1 into/**/outfile '/tmp/x'"),
    ("mysql://u@db.example.com/d", "SELECT LOAD_FILE('/etc/passwd')"),
    ("mysql://u@db.example.com/d", "SELECT load_file /* hidden? */ ('/etc/passwd')"),
    ("mysql://u@db.example.com/d", "SELECT 1--1, LOAD_FILE('/etc/passwd')"),     # no comment without a blank
    ("mysql://u@db.example.com/d", "SELECT \"a\\\"'\", LOAD_FILE('/x') -- '"),    # a quote escaped in "..."
    ("mysql://u@db.example.com/d", "SELECT 1 /*!50000 INTO OUTFILE '/tmp/x' */"),  # executable comment
    ("mysql://u@db.example.com/d", "SELECT 1; LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t"),
    ("postgresql://u@db.example.com/d", "SELECT pg_read_file('/etc/passwd')"),
    ("postgresql://u@db.example.com/d", "SELECT pg_catalog.\"pg_read_binary_file\"('/etc/passwd')"),
    ("postgresql://u@db.example.com/d", "SELECT * FROM pg_ls_dir('/etc')"),
    ("postgresql://u@db.example.com/d", "SELECT pg_stat_file('/etc/passwd')"),
    ("postgresql://u@db.example.com/d", "SELECT lo_import('/etc/passwd')"),
    ("postgresql://u@db.example.com/d", "SELECT lo_export(1, '/tmp/x')"),
    ("postgresql://u@db.example.com/d", "SELECT * FROM dblink('host=10.0.0.1', 'select 1') AS t(a int)"),
    ("postgresql://u@db.example.com/d", "SELECT query_to_xml('select pg_read_file(''/etc/passwd'')', true, true, '')"),
    ("postgresql://u@db.example.com/d", "SELECT 1 /* /* */ 'x */ , pg_read_file('/x') -- '"),  # nested comment
    ("postgresql://u@db.example.com/d", "SELECT E'\\'', pg_read_file('/x') --'"),
    ("postgresql://u@db.example.com/d", "SELECT set_config('statement_timeout', '0', false)"),
    ("postgresql://u@db.example.com/d", "COPY publishers TO PROGRAM 'id'"),
    ("postgresql://u@db.example.com/d", "WITH x AS (SELECT 1) SELECT pg_terminate_backend(42)"),
]


@pytest.mark.parametrize(("url", "query"), ATTACKS)
def test_the_read_only_guard_refuses_what_reaches_files_or_servers(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, url: str, query: str
) -> None:
    status, body = submit(client, {"url": url, "query": query})
    assert status == 422 and list(body["details"]) == ["settings.query"], body
    assert fake_redis.dbsize() == 0


@pytest.mark.parametrize(("backend", "query"), [
    ("mysql", "SELECT name, 'INTO OUTFILE' AS note FROM t WHERE a = ';'"),
    ("mysql", "SELECT `load_file` FROM files"),                     # a column of that name, not a call
    ("postgresql", "SELECT $$pg_read_file($$ AS s, copy FROM t"),
    ("postgresql", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r"),
    ("postgresql", "SELECT a # b FROM t -- load_file("),
    ("sqlite", "(SELECT 1)"),
])
def test_the_read_only_guard_lets_ordinary_queries_through(backend: str, query: str) -> None:
    check_query(query, backend)


def test_a_backslash_before_a_closing_quote_is_refused_where_it_could_read_two_ways() -> None:
    with pytest.raises(SettingError, match="backslash"):
        check_query(r"SELECT 'C:\'", "postgresql")


def test_a_cancelled_job_interrupts_its_running_statement(tmp_path: Path) -> None:
    """The statement of a job is stopped when the job is cancelled, not when the statement ends (SQLite here)."""
    path = tmp_path / "big.db"
    sqlite3.connect(path).close()
    engine = databases.create_engine(databases.check_url(f"sqlite:///{path}", setting="url"),
                                     poolclass=sa.pool.NullPool)
    cancelled = threading.Event()
    databases.job_started(timeout_s=None, cancelled=cancelled.is_set)
    endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    try:
        threading.Timer(0.3, cancelled.set).start()
        started = time.monotonic()
        with engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="interrupted"):
            conn.exec_driver_sql(endless).scalar()
        assert time.monotonic() - started < 5
    finally:
        databases.job_ended(cancel=True)
        engine.dispose()


def test_a_statement_past_the_deadline_is_interrupted(tmp_path: Path) -> None:
    engine = databases.create_engine(databases.check_url(f"sqlite:///{tmp_path / 'x.db'}", setting="url"),
                                     poolclass=sa.pool.NullPool)
    databases.job_started(timeout_s=0.5, cancelled=lambda: False)
    try:
        assert 0 < (databases.remaining_s() or 0) <= 0.5
        started = time.monotonic()
        with engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="interrupted"):
            conn.exec_driver_sql("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                                 "SELECT count(*) FROM r").scalar()
        assert time.monotonic() - started < 5   # the deadline plus the margin the job's own alarm gets first
    finally:
        databases.job_ended(cancel=False)
        engine.dispose()
    assert databases.remaining_s() is None


OK = b"\x00\x00\x00\x02\x00\x00\x00"     # MySQL OK packet: no rows, autocommit on, no warnings


class RogueMySQL:
    """A fake MySQL server that answers the client's first query by asking for a local file (LOAD DATA LOCAL),
    as a hostile server named in a job's URL would; it keeps what the client sent back."""

    LOCAL_FILES = 128

    def __init__(self, wanted: str) -> None:
        self.wanted = wanted
        self.client_flags = 0
        self.received = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def packet(seq: int, payload: bytes) -> bytes:
        return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        with conn:
            capabilities = 1 | 8 | 128 | 512 | 8192 | 32768 | (1 << 19)   # ... LOCAL_FILES, PROTOCOL_41, PLUGIN_AUTH
            greeting = (b"\x0a" + b"5.7.99-rogue\x00" + struct.pack("<I", 7) + b"abcdefgh\x00"
                        + struct.pack("<H", capabilities & 0xFFFF) + b"\x2d" + struct.pack("<H", 2)
                        + struct.pack("<H", capabilities >> 16) + bytes([21]) + b"\x00" * 10
                        + b"ijklmnopqrst\x00" + b"mysql_native_password\x00")
            conn.sendall(self.packet(0, greeting))
            self.client_flags = struct.unpack("<I", self.read_packet(conn)[:4])[0]
            conn.sendall(self.packet(2, OK))                                         # logged in
            while self.read_packet(conn).startswith(b"\x03SET"):                     # session set-up: fine
                conn.sendall(self.packet(1, OK))
            conn.sendall(self.packet(1, b"\xfb" + self.wanted.encode()))            # "now send me this file"
            conn.settimeout(1.5)   # a client that sends the file does so at once
            with contextlib.suppress(OSError):
                while chunk := conn.recv(65536):
                    self.received += chunk

    @staticmethod
    def read_packet(conn: socket.socket) -> bytes:
        header = conn.recv(4, socket.MSG_WAITALL)
        length = int.from_bytes(header[:3], "little")
        return conn.recv(length, socket.MSG_WAITALL) if length else b""

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_a_rogue_server_gets_no_local_file_even_when_the_url_asks_for_local_infile(
    tmp_path: Path, allow_loopback: None
) -> None:
    canary = tmp_path / "environ"
    canary.write_text("COLLECTOR_SECRET_KEY=canary-4f1e9a")
    rogue = RogueMySQL(str(canary))
    # As if the parameter slipped past the allow-list (a trusted URL takes any parameter).
    url = databases.check_url(f"mysql://root@127.0.0.1:{rogue.port}/d?local_infile=1", setting="url", trusted=True)
    engine = databases.create_engine(url, trusted=True, poolclass=sa.pool.NullPool)
    try:
        with pytest.raises(Exception), engine.connect():  # noqa: B017 - the driver refuses the server's request
            pass
    finally:
        engine.dispose()
        rogue.close()
    assert not rogue.client_flags & RogueMySQL.LOCAL_FILES, "the client must not offer to send local files"
    assert b"canary-4f1e9a" not in rogue.received


@pytest.mark.parametrize("url", ["postgresql://app:Sup3r@SecretTail@db.example.com/sales",
                                 "mysql://app:Sup3r@SecretTail@db.example.com/sales"])
def test_a_password_with_an_unencoded_at_is_refused_without_quoting_any_of_it(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, url: str
) -> None:
    status, body = submit(client, {"url": url, "query": "SELECT 1"})
    assert status == 422 and "%40" in body["details"]["settings.url"][0], body
    assert "SecretTail" not in str(body) and "Sup3r" not in str(body)
    status, body = submit(client, {"url": "https://example.com/x", "storage": {"type": "mysql", "settings": {
        "url": url, "table": "t"}}}, platform_id="http_json")
    assert status == 422 and "SecretTail" not in str(body), body
    assert fake_redis.dbsize() == 0


class PasswordAskingServer:
    """A PostgreSQL server on loopback that asks for a cleartext password (or, `method=7`, for GSSAPI) and keeps
    what it is sent."""

    def __init__(self, method: int = 3) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.method = method
        self.startups: list[bytes] = []
        self.passwords: list[str] = []
        self.answers: list[bytes] = []        # the kind of each message that answered the authentication request
        self.gss_encryption_asked = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError, struct.error):
                    self._one(conn)

    @staticmethod
    def _read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _one(self, conn: socket.socket) -> None:
        while True:
            body = self._read(conn, struct.unpack("!I", self._read(conn, 4))[0] - 4)
            code = struct.unpack("!I", body[:4])[0]
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                self.gss_encryption_asked |= code == 80877104
                conn.sendall(b"N")
                continue
            self.startups.append(body)
            break
        conn.sendall(b"R" + struct.pack("!II", 8, self.method))  # 3: AuthenticationCleartextPassword, 7: GSS
        kind = self._read(conn, 1)
        self.answers.append(kind)
        message = self._read(conn, struct.unpack("!I", self._read(conn, 4))[0] - 4)
        if kind == b"p" and self.method == 3:
            self.passwords.append(message.rstrip(b"\0").decode())
        error = b"SFATAL\0C28P01\0Mno\0\0"
        conn.sendall(b"E" + struct.pack("!I", len(error) + 4) + error)

    def close(self) -> None:
        self.sock.close()


def test_a_job_chosen_database_never_gets_the_workers_own_postgresql_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """libpq fills a password the URL leaves out from PGPASSWORD or a password file: the operator's, which must
    not go to a server a job names. A password the job gave itself is still sent."""
    from collector import egress

    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:*:Operator-File-Password\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSWORD", "Operator-Env-Password")
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    server = PasswordAskingServer()
    try:
        with egress.installed(egress.EgressPolicy(allow_hosts=frozenset({"127.0.0.1"}))):
            for url in (f"postgresql://anyone@127.0.0.1:{server.port}/x",
                        f"postgresql://anyone:Own-Password@127.0.0.1:{server.port}/x"):
                engine = databases.create_engine(databases.check_url(url, setting="url"))
                with pytest.raises(sa.exc.OperationalError):
                    engine.connect()
                engine.dispose()
    finally:
        server.close()
    assert len(server.startups) == 2 and all(b"anyone" in s for s in server.startups)
    assert server.passwords == ["Own-Password"]
    assert "password file" not in capfd.readouterr().err  # libpq warns on stderr about a file it cannot use


def test_a_job_chosen_database_never_gets_the_workers_kerberos_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq offers GSSAPI encryption and answers a GSSAPI authentication request with the worker's own Kerberos
    credentials: a server a job names gets neither, whatever the worker's environment asks for."""
    from collector import egress

    monkeypatch.setenv("PGGSSENCMODE", "prefer")
    monkeypatch.setenv("PGREQUIREAUTH", "gss")
    server = PasswordAskingServer(method=7)   # AuthenticationGSS
    try:
        with egress.installed(egress.EgressPolicy(allow_hosts=frozenset({"127.0.0.1"}))):
            engine = databases.create_engine(databases.check_url(
                f"postgresql://anyone:Own-Password@127.0.0.1:{server.port}/x", setting="url"))
            with pytest.raises(sa.exc.OperationalError, match="server requested GSSAPI authentication"):
                engine.connect()
            engine.dispose()
    finally:
        server.close()
    assert len(server.startups) == 1 and server.answers == [] and not server.gss_encryption_asked
    assert databases.check_url("postgresql://u@db.example.com/x?gssencmode=require", setting="url"), \
        "a spec written with gssencmode stays valid; it is overridden at connect"
    connect_args: dict[str, Any] = {"host": "127.0.0.1", "gssencmode": "require"}
    connector = databases._postgresql_connector(egress.EgressPolicy(allow_hosts=frozenset({"127.0.0.1"})))
    connector(None, None, [], connect_args)
    assert connect_args["gssencmode"] == "disable" and connect_args["require_auth"] == "!gss,!sspi"
    assert connect_args["port"] == "5432", "the port checked, never one libpq finds in PGPORT or a service file"
    monkeypatch.setattr(databases, "psycopg_pq_version", lambda: 150007)
    with pytest.raises(EgressError, match="older than 16"):
        connector(None, None, [], {"host": "127.0.0.1"})
