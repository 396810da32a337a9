"""The dashboard's RQ names read JSON only: what rq-dashboard's module calls is rebound, and nothing else reads jobs."""

from __future__ import annotations

import pickle

import fakeredis
import redis
import rq_dashboard.web
from flask import Flask

from collector.api.dashboard import mount_dashboard
from collector.store.rq_dashboard import REBOUND, UNREADABLE, DashboardJob, DashboardSerializer

# RQ names in rq_dashboard.web that read no job data: an exception, a formatter of values already read, the base
# class its lists test with isinstance, and the default its `config.serializer` starts from (replaced on mount).
HARMLESS = {"NoSuchJobError", "get_call_string", "BaseRegistry", "DefaultSerializer"}


def test_every_rq_name_rq_dashboard_calls_is_rebound_on_mount() -> None:
    # Setup only: nothing connects until a request.
    mount_dashboard(Flask("t"), "redis://127.0.0.1:1/0", queue_name="collector",
                    connection=redis.Redis.from_url("redis://127.0.0.1:1/0"))
    from_rq = {name for name, value in vars(rq_dashboard.web).items()
               if str(getattr(value, "__module__", "")).split(".")[0] == "rq"}
    rebound = {name for name in vars(rq_dashboard.web) if name in REBOUND}
    assert from_rq - HARMLESS == set(), f"rq-dashboard calls RQ names collector did not rebind: {from_rq - HARMLESS}"
    assert rebound == set(REBOUND)
    assert all(getattr(rq_dashboard.web, name) is value for name, value in REBOUND.items())
    assert rq_dashboard.web.config.serializer is DashboardSerializer


def test_data_that_is_not_json_reads_as_unreadable_and_is_never_unpickled() -> None:
    assert DashboardSerializer.loads(b'{"a": 1}') == {"a": 1}
    assert DashboardSerializer.loads(pickle.dumps({"a": 1})) == UNREADABLE
    assert DashboardSerializer.loads(b"\xff\xfe") == UNREADABLE


def test_a_dashboard_job_reads_json_whatever_serializer_it_is_given() -> None:
    connection = fakeredis.FakeRedis()
    connection.hset("rq:job:j1", mapping={"data": pickle.dumps(("os.system", None, ("id",), {})),
                                          "meta": pickle.dumps({"x": 1}), "origin": "collector"})
    job = DashboardJob.fetch("j1", connection=connection, serializer=pickle)
    assert job.serializer is DashboardSerializer
    assert job.get_meta() == UNREADABLE
    assert job.get_call_string() == UNREADABLE
