"""What the views call: the shared clients a request uses (config, Redis, platforms, job store, submitter), kept
on the app, and the one operation behind each endpoint."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import redis
from flask import current_app

from collector.config import Config
from collector.errors import CollectorError, NotFoundError
from collector.masking import forget, mask_error, remember
from collector.specs.job import validate_spec
from collector.specs.registry import Registry
from collector.specs.secrets import secrets_in_body
from collector.store import index
from collector.store.records import JobStore
from collector.submit.checks import request_check
from collector.submit.submitter import Submitter
from collector.workflows.cancel import cancel
from collector.workflows.processes import Processes
from collector.workflows.schedules import Schedules
from collector.workflows.waiting import describe, input_secrets, parse_resume, resume

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Services:
    """The shared clients a request uses, kept in `app.extensions["collector"]`."""

    config: Config
    connection: redis.Redis
    registry: Registry

    def __post_init__(self) -> None:
        self.store = JobStore(self.connection, self.config)
        self.submitter = Submitter(connection=self.connection, config=self.config, registry=self.registry)
        self.schedules = Schedules(self.submitter)
        self.processes = Processes(self.submitter)

    def submit(self, body: Any) -> dict[str, Any]:
        """Queue a client's job spec. Its secret values are masked in every log line meanwhile, and in the error
        raised (a validation message may quote a value given for a secret setting)."""
        secrets = remember(secrets_in_body(body, self.registry))
        try:
            return self.submitter.submit(body)
        except CollectorError as exc:
            raise mask_error(exc, secrets) from None
        except Exception as exc:  # logged here, while the secrets are still masked, not by the app's handler
            log.exception("submitting a job failed unexpectedly")
            raise CollectorError(
                f"the service failed unexpectedly ({type(exc).__name__}); the logs have the details"
            ) from None
        finally:
            forget(secrets)

    def view(self, job_id: str, *, full: bool) -> dict[str, Any]:
        """Everything known about a job (datasets' rows with `full`); `NotFoundError` when there is no record."""
        view = self.store.view(job_id, full=full)
        if view is None:
            raise self._no_job(job_id)
        return describe(self.connection, self.config, view)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        found = self.store.events(job_id)
        if not found and not self.store.exists(job_id):
            raise self._no_job(job_id)
        return found

    def resume(self, job_id: str, body: Any) -> dict[str, Any]:
        """Deliver the input a waiting job asked for; inputs may be secret, so masked in every log line meanwhile."""
        token, given = parse_resume(body)
        secrets = remember(input_secrets(given))
        try:
            return resume(self.connection, self.config, job_id, token=token, given=given)
        finally:
            forget(secrets)

    def cancel(self, job_id: str, *, by: str | None) -> dict[str, Any]:
        return cancel(self.connection, self.config, job_id, by=by)

    def list_jobs(self, **query: Any) -> dict[str, Any]:
        return index.list_jobs(self.connection, self.store.keys, **query)

    def check(self, body: Any) -> dict[str, Any]:
        """Have a worker test the connection of the platform (and storage) a job spec names."""
        return request_check(validate_spec(body, self.registry), connection=self.connection, config=self.config)

    @staticmethod
    def _no_job(job_id: str) -> NotFoundError:
        return NotFoundError(
            f"no job {job_id!r}: it never existed or its record expired; check the id POST /execution/run gave",
            details={"job_id": job_id},
        )


def services() -> Services:
    """The services of the app serving the current request."""
    return current_app.extensions["collector"]
