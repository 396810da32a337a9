"""What the views call: the shared clients a request uses (config, Redis, platforms, job store, submitter), kept
on the app, and the one operation behind each endpoint."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from flask import current_app

from collector import defaults
from collector.api.auth import ROUTE_SCOPES
from collector.config import Config
from collector.errors import CollectorError, ConflictError, JobLostError, NotFoundError
from collector.masking import forget, mask_error, remember
from collector.resources import reach
from collector.specs.job import validate_spec
from collector.specs.registry import Registry
from collector.specs.secrets import secrets_in_body
from collector.store import index, ratelimit
from collector.store.dataloss import LossWatch
from collector.store.records import ENDED, JobStore
from collector.store.rq_dashboard import REGISTRIES, DashboardLists
from collector.submit.checks import request_check
from collector.submit.submitter import Submitter
from collector.workflows.cancel import cancel
from collector.workflows.inbox import inbox, list_processes
from collector.workflows.processes import Processes
from collector.workflows.retry import retry, retry_failed
from collector.workflows.schedules import Schedules
from collector.workflows.waiting import describe, input_secrets, parse_callback, parse_resume, resume

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass
class Services:
    """The shared clients a request uses, kept in `app.extensions["collector"]`."""

    config: Config
    connection: redis.Redis
    registry: Registry

    def __post_init__(self) -> None:
        # The connections and data root specs are checked against; a bad connections file or an unsafe data
        # root stops start-up here.
        self.reach = reach.ensure(self.config)
        self.store = JobStore(self.connection, self.config)
        self.submitter = Submitter(connection=self.connection, config=self.config, registry=self.registry)
        self.schedules = Schedules(self.submitter)
        self.processes = Processes(self.submitter)
        self.loss_watch = LossWatch(self.connection, self.store.keys, redis_url=self.config.redis_where)
        self.loss_watch.check_quietly()  # the run id this process starts on; warns if Redis keeps nothing

    def admit(self, who: str) -> None:
        """Count one submit of `who` (`RateLimitedError` past `COLLECTOR_SUBMITS_PER_MINUTE`). Called once a
        request proved valid, right before it writes: a refused or malformed request writes nothing, not even to
        its caller's count."""
        if self.config.submits_per_minute:
            ratelimit.count_submit(self.connection, self.store.keys, who, per_minute=self.config.submits_per_minute)

    def submit(self, body: Any, *, by: str) -> dict[str, Any]:
        """Queue a client's job spec, a submit of `by`."""
        return self._secrets_masked([body], "submitting a job", lambda: self.submitter.submit(
            body, admit=lambda: self.admit(by), scope=by, replicated=True))

    def _secrets_masked(self, specs: list[Any], doing: str, work: Callable[[], T]) -> T:
        """`work()`, with the secret values the job `specs` give masked in every log line meanwhile and in the
        error raised (a validation message may quote a value given for a secret setting)."""
        secrets = remember([value for spec in specs for value in secrets_in_body(spec, self.registry)])
        try:
            return work()
        except CollectorError as exc:
            raise mask_error(exc, secrets) from None
        except redis.RedisError:
            raise  # the app answers 503 (Redis down or full), naming no value of the spec
        except Exception as exc:  # logged here, while the secrets are still masked, not by the app's handler
            log.exception("%s failed unexpectedly", doing)
            raise CollectorError(
                f"the service failed unexpectedly ({type(exc).__name__}); the logs have the details"
            ) from None
        finally:
            forget(secrets)

    def view(self, job_id: str, *, full: bool, offset: int = 0, limit: int = defaults.FULL_PAGE_ROWS,
             with_resume: bool = True) -> dict[str, Any]:
        """Everything known about a job (with `full`, rows `offset` to `offset + limit` of its datasets and the
        link to the next page); `NotFoundError` when there is no record. `with_resume`: a job waiting for input
        shows what resumes it (its resume token and callback link), for a caller who may resume it."""
        view = self.store.view(job_id, full=full, offset=offset, limit=limit)
        if view is None:
            raise self._no_job(job_id)
        if full:
            page = view["datasets_page"]
            page["next"] = (None if page["next_offset"] is None else
                            f"/execution/get?job_id={job_id}&full=1&offset={page['next_offset']}&limit={limit}")
        return describe(self.connection, self.config, view, with_resume=with_resume)

    def events(self, job_id: str, *, after: str | None = None) -> list[dict[str, Any]]:
        found = self.store.events(job_id, after=after)
        if not found and not self.store.exists(job_id):
            raise self._no_job(job_id)
        return found

    def callback(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """`GET /execution/callback`: resume a waiting job with the query as its input; the link's token is its
        proof (an identity provider's redirect carries no API token). Inputs are masked in every log line."""
        job_id, token, given = parse_callback(query)
        secrets = remember([token, *input_secrets(given)])
        try:
            return resume(self.connection, self.config, job_id, token=token, given=given, by="callback link")
        finally:
            forget(secrets)

    def resume(self, job_id: str, body: Any, *, by: str) -> dict[str, Any]:
        """Deliver the input a waiting job asked for, on behalf of `by`; inputs may be secret, so masked in every
        log line meanwhile."""
        token, given = parse_resume(body)
        secrets = remember(input_secrets(given))
        try:
            return resume(self.connection, self.config, job_id, token=token, given=given, by=by)
        finally:
            forget(secrets)

    def cancel(self, job_id: str, *, by: str, reason: str | None) -> dict[str, Any]:
        return cancel(self.connection, self.config, job_id, by=by, reason=reason)

    def retry(self, job_id: str, *, by: str) -> dict[str, Any]:
        """Queue a failed, stopped or canceled job again, from its last checkpoint, on behalf of `by`."""
        return retry(self.connection, self.config, job_id, by=by)

    def retry_failed(self, *, by: str) -> dict[str, Any]:
        """Retry by hand every job in RQ's failed registry that can be (rq-dashboard's Requeue All)."""
        return retry_failed(self.connection, self.config, by=by)

    def cancel_unless_ended(self, job_id: str, *, by: str, reason: str) -> bool:
        """Cancel `job_id` when it has a record and has not ended (rq-dashboard's Delete); False otherwise."""
        status = self.store.read(job_id, "status").get("status")
        if status is None or status in ENDED:
            return False
        try:
            cancel(self.connection, self.config, job_id, by=by, reason=reason)
        except ConflictError:  # it ended meanwhile: delete it as an ended job
            return False
        return True

    def empty_list(self, queue_name: str, list_name: str, *, by: str) -> dict[str, Any]:
        """rq-dashboard's Empty of a queue's list (`queued` or a registry): each job that has not ended is canceled
        (its record says so; a running one stops), as Delete does; an ended one is deleted from RQ. Deleting RQ's
        side of a job that has not ended would leave its record `queued`, `scheduled` or `deferred` for good."""
        lists = DashboardLists(self.connection, self.config)
        job_ids = lists.job_ids(queue_name, list_name)
        if job_ids is None:
            raise NotFoundError(f"rq-dashboard has no list {list_name!r} to empty; it empties queued, "
                                f"{', '.join(sorted(REGISTRIES))}", details={"list": list_name})
        canceled = deleted = 0
        for job_id in dict.fromkeys(job_ids):
            if self.cancel_unless_ended(job_id, by=by, reason="emptied in the dashboard"):
                canceled += 1
            else:
                lists.delete(job_id, queue_name, list_name)
                deleted += 1
        return {"canceled": canceled, "deleted": deleted}

    def compact_queue(self, queue_name: str) -> dict[str, Any]:
        """rq-dashboard's Compact: the ids of jobs whose RQ hash is gone dropped from the queue, in one step."""
        dropped = DashboardLists(self.connection, self.config).compact(queue_name)
        if dropped is None:
            raise NotFoundError(f"no queue {queue_name!r} to compact; the queues are listed at /rq/0/data/queues.json",
                                details={"queue": queue_name})
        return {"dropped": dropped}

    def list_jobs(self, **query: Any) -> dict[str, Any]:
        return index.list_jobs(self.connection, self.store.keys, **query)

    def check(self, body: Any, *, by: str) -> dict[str, Any]:
        """Have a worker test the connection of the platform (and storage) a job spec names (a submit of `by`)."""
        spec = validate_spec(body, self.registry, max_timeout_s=self.config.max_timeout_s)
        self.admit(by)
        return request_check(spec, connection=self.connection, config=self.config)

    def run_process(self, body: Any, *, by: str) -> dict[str, Any]:
        """Start the process `body` defines (a submit of `by`)."""
        steps = body.get("steps") if isinstance(body, dict) else None
        tasks = [task for step in steps if isinstance(step, dict) and isinstance(step.get("tasks"), list)
                 for task in step["tasks"]] if isinstance(steps, list) else []
        return self._secrets_masked(tasks, "starting a process",
                                    lambda: self.processes.run(body, admit=lambda: self.admit(by)))

    def list_processes(self, **query: Any) -> dict[str, Any]:
        return list_processes(self.processes, **query)

    def inbox(self) -> dict[str, Any]:
        """What waits for a person, oldest first, each item with the scope its action needs."""
        answer = inbox(self.processes)
        for item in answer["items"]:
            item["scope"] = ROUTE_SCOPES[item.pop("endpoint")]
        return answer

    def create_schedule(self, body: Any, *, by: str) -> dict[str, Any]:
        """Store the schedule `body` describes (a submit of `by`)."""
        spec = body.get("spec") if isinstance(body, dict) else None
        return self._secrets_masked([spec], "creating a schedule",
                                    lambda: self.schedules.create(body, admit=lambda: self.admit(by)))

    def _no_job(self, job_id: str) -> NotFoundError:
        """The 404 of a job with no record; a 410 when its id was made before a Redis data loss noticed since."""
        loss = self.loss_watch.lost_job(job_id, kept_s=max(self.config.record_ttl_s, self.config.failed_record_ttl_s))
        if loss is not None:
            return JobLostError(
                f"job {job_id!r} was lost with Redis data: it was created before Redis lost its data (noticed "
                f"{loss['noticed_at']}), and its record, datasets and events are gone. Submit it again; turn on "
                "Redis persistence (AOF or RDB) so a restart keeps records",
                details={"job_id": job_id, "data_loss_noticed_at": loss["noticed_at"]},
            )
        return NotFoundError(
            f"no job {job_id!r}: it never existed or its record expired; check the id POST /execution/run gave",
            details={"job_id": job_id},
        )


def services() -> Services:
    """The services of the app serving the current request."""
    return current_app.extensions["collector"]
