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

from redis import Redis
from redis.commands.core import Script
from rq import Queue, Worker
from rq import registry as rq_registry
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job
from rq.serializers import DefaultSerializer, JSONSerializer

from collector.config import Config
from collector.errors import PickleRefusedError
from collector.store import scripts
from collector.store.rq import RQ


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


# The lists rq-dashboard's Empty action names, besides `queued` (the queue itself): RQ's registries.
REGISTRIES = {"started": "StartedJobRegistry", "failed": "FailedJobRegistry", "finished": "FinishedJobRegistry",
              "deferred": "DeferredJobRegistry", "scheduled": "ScheduledJobRegistry",
              "canceled": "CanceledJobRegistry"}

# KEYS: a queue's lists. ARGV[1]: the prefix of RQ's job hashes. Each list keeps, in order, the ids whose job hash
# exists; returns how many ids were dropped, or -1 when none of the lists exists. One script: a queue is never
# seen half compacted, and nothing is ever held outside it (RQ's own compact moves the whole queue to a list of its
# own and pushes the ids back one round trip each: a process stopped meanwhile loses what it had not pushed back).
COMPACT = """
local dropped, found = 0, false
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    found = true
    local ids = redis.call('LRANGE', key, 0, -1)
    local kept = {}
    for _, id in ipairs(ids) do
      if redis.call('EXISTS', ARGV[1] .. id) == 1 then kept[#kept + 1] = id else dropped = dropped + 1 end
    end
    if #kept < #ids then
      redis.call('DEL', key)
      for first = 1, #kept, 1000 do
        redis.call('RPUSH', key, unpack(kept, first, math.min(first + 999, #kept)))
      end
    end
  end
end
if not found then return -1 end
return dropped
"""
COMPACT_SCRIPT = Script(None, COMPACT.encode())


class DashboardLists:
    """The lists rq-dashboard's actions empty and compact: a queue (collector's is three priority lanes) and RQ's
    registries of it."""

    def __init__(self, connection: Redis, config: Config) -> None:
        self.connection = connection
        self.config = config

    def queue_keys(self, queue_name: str) -> list[str]:
        """The lists jobs of the queue `queue_name` wait in: every lane of collector's queue, else RQ's one list."""
        if queue_name == self.config.queue_name:
            return RQ(self.connection, self.config).lane_keys
        return [DashboardQueue(queue_name, connection=self.connection).key]

    def job_ids(self, queue_name: str, list_name: str) -> list[str] | None:
        """The ids listed in `list_name` (`queued`, or a registry's name) of `queue_name`; None for no such list."""
        if list_name == "queued":
            return [raw.decode() for key in self.queue_keys(queue_name) for raw in self.connection.lrange(key, 0, -1)]
        if list_name not in REGISTRIES:
            return None
        return REBOUND[REGISTRIES[list_name]](queue_name, connection=self.connection).get_job_ids(cleanup=False)

    def delete(self, job_id: str, queue_name: str, list_name: str) -> None:
        """RQ's side of `job_id` deleted, as rq-dashboard's Delete does, and the id out of the list it was listed in
        (RQ's delete takes it off its queue's normal lane only, and an id whose job hash is gone off nothing)."""
        try:
            DashboardJob.fetch(job_id, connection=self.connection).delete()
            if list_name != "queued":
                return
        except NoSuchJobError:
            pass
        with self.connection.pipeline() as pipe:
            if list_name == "queued":
                for key in self.queue_keys(queue_name):
                    pipe.lrem(key, 0, job_id)
            elif list_name == "started":  # its entries are `<job id>:<execution id>`
                registry = REBOUND["StartedJobRegistry"](queue_name, connection=self.connection)
                entries = [e for e in self.connection.zrange(registry.key, 0, -1)
                           if e.decode().rsplit(":", 1)[0] == job_id]
                if entries:
                    pipe.zrem(registry.key, *entries)
            else:
                REBOUND[REGISTRIES[list_name]](queue_name, connection=self.connection).remove(job_id, pipeline=pipe)
            pipe.execute()

    def compact(self, queue_name: str) -> int | None:
        """Drop from the queue's lists the ids whose job hash is gone, atomically; how many were dropped, or None
        when there is no such queue (collector's, or one RQ knows)."""
        dropped = int(scripts.call(COMPACT_SCRIPT, keys=self.queue_keys(queue_name),
                                   args=[Job.redis_job_namespace_prefix], client=self.connection))
        if dropped >= 0:
            return dropped
        known = queue_name == self.config.queue_name or self.connection.sismember(
            Queue.redis_queues_keys, DashboardQueue(queue_name, connection=self.connection).key)
        return 0 if known else None   # a queue with nothing waiting has no list
