"""What rq-dashboard reads, and RQ's pickle serializer refused.

rq-dashboard 0.9 passes no serializer to most of what it calls (`Job.fetch` in the job view and delete,
`requeue_job`, the registries behind its lists and its empty action, `Queue.all`), so RQ would unpickle whatever a
job hash holds. `api/dashboard.py` rebinds each RQ name of its module (`REBOUND`) to one of these, which always
read with `DashboardSerializer`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

from rq import Queue, Worker
from rq import registry as rq_registry
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job
from rq.serializers import DefaultSerializer, JSONSerializer

from collector.errors import PickleRefusedError


def _refuse(*_: object, **__: object) -> NoReturn:
    raise PickleRefusedError(
        "RQ was asked to pickle or unpickle because a caller named no serializer; collector reads and writes RQ "
        "data as JSON only: pass serializer=JSONSerializer"
    )


def refuse_pickle() -> None:
    """Make RQ's pickle serializer refuse in this process (and the processes it forks): RQ falls back to pickle
    wherever a caller names no serializer, and that fallback must fail loudly rather than unpickle."""
    DefaultSerializer.loads = staticmethod(_refuse)  # type: ignore[assignment]
    DefaultSerializer.dumps = staticmethod(_refuse)  # type: ignore[assignment]


UNREADABLE = "(unreadable: not JSON; collector reads RQ data as JSON only and never unpickles it)"


class DashboardSerializer:
    """RQ's JSON serializer, except that data which is not JSON reads as the text UNREADABLE instead of failing:
    a job hash someone wrote with pickle then shows in the dashboard for what it is."""

    @staticmethod
    def dumps(value: Any) -> bytes:
        return JSONSerializer.dumps(value)

    @staticmethod
    def loads(data: bytes | str) -> Any:
        try:
            return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            return UNREADABLE


class DashboardJob(Job):
    """A job read with `DashboardSerializer`, whatever serializer the caller names."""

    def __init__(self, id: str | None = None, connection: Any = None, serializer: Any = None) -> None:
        super().__init__(id, connection=connection, serializer=DashboardSerializer)

    def get_call_string(self) -> str | None:
        try:
            return super().get_call_string()
        except (DeserializationError, ValueError):  # a payload that is not a JSON call
            return UNREADABLE


class DashboardQueue(Queue):
    """A queue whose jobs (and registries) are read with `DashboardSerializer`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(serializer=DashboardSerializer, job_class=DashboardJob)
        super().__init__(*args, **kwargs)


def _registry(base: type[rq_registry.BaseRegistry]) -> type[rq_registry.BaseRegistry]:
    """`base` with `DashboardSerializer` and `DashboardJob`, whatever the caller names."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.update(serializer=DashboardSerializer, job_class=DashboardJob)
        base.__init__(self, *args, **kwargs)

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": __name__})


class DashboardWorker(Worker):
    """`Worker.all` reading each worker's current job with `DashboardSerializer`."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Worker]:  # type: ignore[override]
        kwargs.update(serializer=DashboardSerializer, job_class=DashboardJob, queue_class=DashboardQueue)
        return Worker.all(*args, **kwargs)


def requeue_job(job_id: str, connection: Any, serializer: Any = None) -> Job:
    """RQ's `requeue_job`, reading the job with `DashboardSerializer`."""
    return DashboardJob.fetch(job_id, connection=connection).requeue()


# Every RQ name rq_dashboard.web calls, and what `api/dashboard.py` rebinds it to. tests/unit/test_dashboard_json.py
# checks that the module holds no other RQ class or function that reads jobs, so an upgrade that adds one is noticed.
REBOUND: dict[str, Any] = {
    "Job": DashboardJob,
    "Queue": DashboardQueue,
    "Worker": DashboardWorker,
    "requeue_job": requeue_job,
    **{name: _registry(getattr(rq_registry, name)) for name in (
        "CanceledJobRegistry", "DeferredJobRegistry", "FailedJobRegistry", "FinishedJobRegistry",
        "ScheduledJobRegistry", "StartedJobRegistry",
    )},
}


def job_data(view: Callable[..., dict[str, Any]], **arguments: Any) -> dict[str, Any] | None:
    """What rq-dashboard's job data `view` answers for `arguments`, or None when RQ has no such job."""
    try:
        return view(**arguments)
    except NoSuchJobError:
        return None
