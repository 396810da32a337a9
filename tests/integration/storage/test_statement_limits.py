"""Statements on real servers end with their job: timed out, cancelled or its worker stopped; LOCAL INFILE is off."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa

from collector.resources import databases
from tests.conftest import PoolProcess, ServedApp, wait_for
from tests.integration.storage.conftest import mariadb_admin, postgres_admin

SLOW_PG = ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 600 "
           "AND pg_sleep(0.1) IS NOT NULL) SELECT count(*) AS n FROM r")     # about 60 s, next to no memory


def submit(served: ServedApp, settings: dict[str, Any], **spec: Any) -> str:
    status, body = served.request("POST", "/execution/run", {"platform_id": "sql_query", "settings": settings,
                                                             **spec})
    assert status == 202, body
    return body["job_id"]


def record(served: ServedApp, job_id: str) -> dict[str, Any]:
    return served.request("GET", f"/execution/get?job_id={job_id}")[1]


def ended(served: ServedApp, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (r := record(served, job_id))["status"] in ("finished", "failed", "stopped") and r,
                    timeout_s=timeout_s, what=f"job {job_id} to end")


def pg_running(database: str) -> int:
    admin = postgres_admin()
    try:
        # The database is the test's own: any statement active there is the job's (a DECLARE, then FETCHes).
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                             "AND pid <> pg_backend_pid()", (database,)).fetchone()[0]
    finally:
        admin.close()


def mariadb_running(database: str) -> int:
    admin = mariadb_admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM information_schema.processlist WHERE db = %s AND info LIKE %s",
                           (database, "%SLEEP(%"))
            return cursor.fetchone()[0]
    finally:
        admin.close()


def test_a_postgresql_query_stops_on_the_server_when_its_job_times_out(
    served: ServedApp, start_pool: Callable[..., PoolProcess], postgres_url: str
) -> None:
    start_pool(1)
    database = sa.engine.make_url(postgres_url).database
    job_id = submit(served, {"url": postgres_url, "query": SLOW_PG}, timeout_s=3)
    wait_for(lambda: pg_running(database), timeout_s=15, what="the query to run")
    done = ended(served, job_id)
    assert done["status"] == "failed" and done["error"]["type"] == "JobTimeoutError", done
    wait_for(lambda: pg_running(database) == 0, timeout_s=3, what="the query to be gone from pg_stat_activity")


def test_a_postgresql_query_stops_when_its_job_is_cancelled(
    served: ServedApp, start_pool: Callable[..., PoolProcess], postgres_url: str
) -> None:
    pool = start_pool(1)
    database = sa.engine.make_url(postgres_url).database
    job_id = submit(served, {"url": postgres_url, "query": SLOW_PG}, timeout_s=300)
    wait_for(lambda: pg_running(database), timeout_s=15, what="the query to run")
    status, body = served.request("POST", f"/execution/cancel?job_id={job_id}", {"reason": "ops"})
    assert status == 202, body
    asked = time.monotonic()
    done = ended(served, job_id, timeout_s=8)
    assert done["status"] == "stopped" and done["cancel_reason"] == "ops", done
    assert time.monotonic() - asked < 3, "stopped by the cancel, well within the kill grace period"
    wait_for(lambda: pg_running(database) == 0, timeout_s=3, what="the query to be gone from pg_stat_activity")
    assert pool.process.poll() is None and "killed" not in pool.output()


def test_a_postgresql_query_stops_when_its_worker_is_killed(
    served: ServedApp, start_pool: Callable[..., PoolProcess], postgres_url: str
) -> None:
    """A worker shut down past its grace is killed outright: the server notices the lost client and stops."""
    pool = start_pool(1, COLLECTOR_SHUTDOWN_GRACE_S="0.5")
    database = sa.engine.make_url(postgres_url).database
    submit(served, {"url": postgres_url, "query": SLOW_PG}, timeout_s=300)
    wait_for(lambda: pg_running(database), timeout_s=15, what="the query to run")
    pool.stop()
    wait_for(lambda: pg_running(database) == 0, timeout_s=5, what="the query to be gone from pg_stat_activity")


def test_a_mariadb_query_stops_on_the_server_when_its_job_times_out(
    served: ServedApp, start_pool: Callable[..., PoolProcess], mariadb_url: str
) -> None:
    start_pool(1)
    database = sa.engine.make_url(mariadb_url).database
    job_id = submit(served, {"url": mariadb_url, "query": "SELECT SLEEP(60) AS s"}, timeout_s=3)
    wait_for(lambda: mariadb_running(database), timeout_s=15, what="the query to run")
    done = ended(served, job_id)
    assert done["status"] == "failed" and done["error"]["type"] == "JobTimeoutError", done
    wait_for(lambda: mariadb_running(database) == 0, timeout_s=3, what="the query to leave the process list")


def test_connections_carry_the_jobs_remaining_time_as_statement_timeout(
    postgres_url: str, mariadb_url: str
) -> None:
    databases.job_started(timeout_s=30, cancelled=lambda: False)
    try:
        pg = databases.create_engine(databases.check_url(postgres_url, setting="url"))
        my = databases.create_engine(databases.check_url(mariadb_url, setting="url"))
        with pg.connect() as conn:
            timeout = conn.exec_driver_sql("SHOW statement_timeout").scalar()
            check = conn.exec_driver_sql("SHOW client_connection_check_interval").scalar()
        with my.connect() as conn:
            seconds = conn.exec_driver_sql("SELECT @@max_statement_time").scalar()
    finally:
        databases.job_ended(cancel=False)
        pg.dispose()
        my.dispose()
    # The job's 30 s (less what has passed) plus the margin that lets the job's own timeout report first.
    milliseconds = float(timeout.removesuffix("ms")) if timeout.endswith("ms") else float(timeout.rstrip("s")) * 1000
    assert 29_000 < milliseconds <= 31_000, timeout
    assert check == "1s"
    assert 29 < float(seconds) <= 31, seconds


def test_local_infile_stays_off_even_when_a_parameter_asks_for_it(mariadb_url: str) -> None:
    admin = mariadb_admin()
    database = sa.engine.make_url(mariadb_url).database
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE TABLE `{database}`.loaded (line TEXT)")
    finally:
        admin.close()
    # As if an operator connection (trusted: no parameter allow-list) asked for it.
    url = databases.check_url(f"{mariadb_url}?local_infile=1&client_flag=128", setting="url", trusted=True)
    engine = databases.create_engine(url, trusted=True)
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw._local_infile is False and not raw.client_flag & 128   # CLIENT.LOCAL_FILES
            with pytest.raises(sa.exc.DBAPIError) as refused:
                conn.exec_driver_sql("LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE loaded")
            assert isinstance(refused.value.orig, pymysql.err.MySQLError)
            assert conn.exec_driver_sql("SELECT count(*) FROM loaded").scalar() == 0
    finally:
        engine.dispose()


def test_a_host_that_resolves_to_loopback_is_refused_at_connect_time(postgres_url: str) -> None:
    from collector import egress
    from collector.config import Config
    from collector.errors import EgressError

    url = databases.check_url(postgres_url.replace("127.0.0.1", "localhost"), setting="url")
    with egress.installed(egress.EgressPolicy.from_config(Config())):
        engine = databases.create_engine(url)
        try:
            with pytest.raises(EgressError, match="localhost resolves to"), engine.connect():
                pass
        finally:
            engine.dispose()
