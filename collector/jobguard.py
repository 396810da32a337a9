"""RQ without pickle and without foreign code: workers run only collector's own job functions.

Anyone who can write to Redis can put a job there that names any importable function (`os.system`),
RQ callbacks, webhooks, or a pickled payload. A worker reads what a job names before importing
anything: a job that is not a plain call of one of collector's job functions is failed with the
reason and logged, and nothing it names is imported or called. RQ falls back to pickle wherever a
caller names no serializer; `refuse_pickle` makes that fallback fail loudly in collector's processes.
"""

from __future__ import annotations

from typing import Any, NoReturn

from rq.exceptions import DeserializationError
from rq.job import Job
from rq.serializers import DefaultSerializer

from collector.checks import CHECK_FUNCTION
from collector.errors import ForeignJobError, PickleRefusedError
from collector.heartbeat import CollectorJob
from collector.jobs import RUN_FUNCTION

JOB_FUNCTIONS = frozenset({RUN_FUNCTION, CHECK_FUNCTION})  # all a worker runs; both take no arguments
RULE = f"collector runs only its own job functions ({', '.join(sorted(JOB_FUNCTIONS))}) with no arguments, " \
       "callbacks or webhooks, so the job was refused without importing anything it names"


def refusal(job: Job) -> str | None:
    """Why `job` must not run, or None when it is a plain call of one of collector's job functions."""
    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        return f"job {job.id}: its payload is not JSON; {RULE}"
    if not isinstance(func_name, str) or func_name not in JOB_FUNCTIONS or instance is not None:
        return f"job {job.id} names the function {str(func_name)[:200]!r}; {RULE}"
    if args or kwargs:
        return f"job {job.id} passes arguments to {func_name}; {RULE}"
    # RQ imports a callback by the name the job carries, and posts webhooks to the URLs it carries.
    callbacks = [name for name in (job._success_callback_name, job._failure_callback_name,
                                   job._stopped_callback_name) if name]
    if callbacks:
        return f"job {job.id} names the callback(s) {[str(n)[:200] for n in callbacks]!r}; {RULE}"
    if job.webhooks:
        return f"job {job.id} carries webhooks; {RULE}"
    return None


class GuardedJob(CollectorJob):
    """The job class of collector's workers: RQ asks for `func` right before calling it, and gets it only for a
    job that `refusal` passes; callbacks and webhooks are never imported or sent."""

    @property
    def func(self) -> Any:
        reason = refusal(self)
        if reason is not None:
            raise ForeignJobError(reason)
        return super().func

    @property
    def success_callback(self) -> None:  # type: ignore[override]
        return None

    @property
    def failure_callback(self) -> None:  # type: ignore[override]
        return None

    @property
    def stopped_callback(self) -> None:  # type: ignore[override]
        return None

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        return None


def _refuse(*_: object, **__: object) -> NoReturn:
    raise PickleRefusedError(
        "RQ was asked to pickle or unpickle because a caller named no serializer; collector reads and writes RQ "
        "data as JSON only: pass serializer=JSONSerializer"
    )


def refuse_pickle() -> None:
    """Make RQ's pickle serializer refuse in this process (and the processes it forks)."""
    DefaultSerializer.loads = staticmethod(_refuse)  # type: ignore[assignment]
    DefaultSerializer.dumps = staticmethod(_refuse)  # type: ignore[assignment]
