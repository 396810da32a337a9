"""The exception tree of collector and the HTTP status each maps to.

    CollectorError                   root: anything collector raises on purpose
    ├── ConfigError                  the service is configured wrong (exits at start-up)
    ├── ContractError                a platform or storage class breaks the settings contract (reported by name)
    ├── RequestError                 the request is wrong; never retried (4xx)
    │   ├── BadRequestError          400: not JSON, a limit broken, missing parameter
    │   ├── UnauthorizedError        401: no valid API token (or basic auth where only bearer is taken)
    │   ├── ForbiddenError           403: a resume token that is wrong or already used
    │   │   ├── InsufficientScopeError   403: the token lacks the scope the route needs (named)
    │   │   └── CrossSiteError           403: a state-changing request from another site's page
    │   ├── NotFoundError            404: no such job, process or schedule
    │   │   └── JobLostError         410: the job's record was lost with Redis data (a loss was noticed since)
    │   ├── ConflictError            409: the job or process is in a state that forbids the request
    │   ├── ValidationError          422: field errors, each with its path
    │   │   └── SettingError         422: one setting refused (unknown connection, path out of the data root)
    │   └── RateLimitedError         429: the caller submitted too often; `Retry-After` says when to try again
    ├── ServiceUnavailableError      503: Redis (or another service) is down
    │   ├── RedisFullError           503: Redis is at its maxmemory and refuses writes
    │   ├── NotReplicatedError       503: a job was queued but fewer replicas than asked acknowledged it in time
    │   └── CheckTimeoutError        504: no worker answered a connection check in time
    ├── PlatformError                a platform failed while running a job
    │   ├── FatalError               the source failed for good: not retried
    │   │   ├── ChildJobError        a sub-job failed and the parent did not take it in hand
    │   │   └── EgressError          a destination the egress policy refuses (address, redirect, size)
    │   └── TransientError           the source failed for now: may be retried
    │       └── RateWaitError        a rate limit's next token is further off than a job waits for one
    ├── StorageError                 writing collected rows failed
    ├── UnsafePathError              a job's local path left its root, met a symlink or reached code when opened
    ├── WorkerDiedError              the worker process running a job died
    ├── JobTimeoutError              a job ran longer than its timeout
    ├── WaitTimeoutError             a waiting job got no input (or its children did not end) in time
    ├── JobCancelledError            a job was cancelled while it ran (raised by ctx.progress)
    ├── LeaseLostError               a run lost its lease on its record (recovered elsewhere, or the record gone)
    ├── JobFailedError               what a worker raises to RQ for a job that did not finish (text masked)
    ├── ForeignJobError              a job in Redis names a function that is not collector's own: refused
    ├── PickleRefusedError           something asked RQ for pickle, which collector never reads or writes
    ├── ServiceError                 the CLI client: the service answered with an error
    ├── SpecSourceError              `collector run`/`check`: no usable job spec (file, --from-job, --set)
    └── ScaffoldError                `collector new-platform` cannot write the files

    JobSuspended (a BaseException, no error): ends a job's attempt while it waits; see its docstring.
"""

from __future__ import annotations

from typing import Any


class CollectorError(Exception):
    """Root of every error collector raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class ConfigError(CollectorError):
    """The service is configured wrong."""

    code = "config_error"


class ContractError(CollectorError):
    """A platform or backend class does not follow the settings contract; the message says how."""

    code = "contract_error"


class RequestError(CollectorError):
    """The request is wrong; retrying it unchanged cannot succeed."""

    status = 400
    code = "bad_request"


class BadRequestError(RequestError):
    status = 400
    code = "bad_request"


class ForbiddenError(RequestError):
    status = 403
    code = "forbidden"


class UnauthorizedError(RequestError):
    """No valid API token; the answer carries a `WWW-Authenticate` challenge."""

    status = 401
    code = "unauthorized"


class InsufficientScopeError(ForbiddenError):
    """The token is valid but lacks the scope the route declares; `details` names the scope."""

    code = "insufficient_scope"


class CrossSiteError(ForbiddenError):
    """A POST/PUT/PATCH/DELETE from another site's page (`Origin`, `Sec-Fetch-Site`), or sent with basic auth
    without showing it comes from this site's own page."""

    code = "cross_site_request"


class NotFoundError(RequestError):
    status = 404
    code = "not_found"


class JobLostError(NotFoundError):
    """The job existed, but its record went with data Redis lost (restarted without persistence, flushed)."""

    status = 410
    code = "job_lost"


class ConflictError(RequestError):
    status = 409
    code = "conflict"


class ValidationError(RequestError):
    """Field errors, all at once: `details` maps each field path to its messages."""

    status = 422
    code = "validation_error"


class RateLimitedError(RequestError):
    """The caller made more submits than `COLLECTOR_SUBMITS_PER_MINUTE` allows; `retry_after_s` says when to retry."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class SettingError(ValidationError, ValueError):
    """One setting's value is refused; raised by a platform's or backend's `__init__`, reported under `field`.

    It is a `ValueError` too, so code that checks settings with `except ValueError` still catches it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, details={field: [message]})
        self.field = field


class ServiceUnavailableError(CollectorError):
    status = 503
    code = "service_unavailable"


class RedisFullError(ServiceUnavailableError):
    """Redis answered OOM: it holds `maxmemory` and, with `noeviction`, refuses writes until memory is freed."""

    code = "redis_full"


class NotReplicatedError(ServiceUnavailableError):
    """A submit wrote its job, but fewer replicas than COLLECTOR_REDIS_MIN_REPLICAS acknowledged it in time: the job
    may run, or be lost if the primary fails before it replicates."""

    code = "not_replicated"


class CheckTimeoutError(ServiceUnavailableError):
    """No worker answered `POST /platforms/check` before its deadline."""

    status = 504
    code = "check_timeout"


class PlatformError(CollectorError):
    """A platform failed while running a job."""

    code = "platform_error"


class FatalError(PlatformError):
    """The source failed for good (bad credentials, missing resource): not retried."""

    code = "fatal_error"


class ChildJobError(FatalError):
    """A sub-job the platform spawned did not finish; `ctx.wait_children()` raises it (unless told not to)."""

    code = "child_failed"


class EgressError(FatalError):
    """A job tried to reach a destination the egress policy refuses: a loopback, private, link-local or other
    non-public address, a redirect to another scheme or past the cap, or a response over the size cap."""

    code = "egress_refused"


class TransientError(PlatformError):
    """The source failed for now (HTTP 429/5xx, connection reset): may be retried."""

    code = "transient_error"


class RateWaitError(TransientError):
    """A rate limit's next token is further off than `COLLECTOR_RATE_MAX_WAIT_S`: the job is retried later."""

    code = "rate_wait"


class StorageError(CollectorError):
    """Writing collected rows to a storage target failed."""

    code = "storage_error"


class UnsafePathError(CollectorError):
    """A local path, checked again as the file was opened, left its root, went through a symlink or reached
    a folder code is imported from; nothing was read or written."""

    code = "unsafe_path"


class WorkerDiedError(CollectorError):
    """The worker process running a job died (signal, memory)."""

    code = "worker_died"


class JobTimeoutError(CollectorError):
    """A job ran longer than its timeout (spec `timeout_s`, platform `TIMEOUT_S`, or the service default)."""

    code = "timeout"


class WaitTimeoutError(CollectorError):
    """A job waited longer than its `timeout_s` for outside input (`ctx.wait_for`) or for its children."""

    code = "wait_timeout"


class JobCancelledError(CollectorError):
    """The job was cancelled while it ran; `ctx.progress` raises it so the platform stops."""

    code = "cancelled"


class LeaseLostError(CollectorError):
    """A run no longer holds the lease on its job record: the job was recovered and runs (or ran) as another
    attempt, or its record was deleted or expired. Raised at the run's next `ctx` call; it writes nothing more."""

    code = "lease_lost"


class JobFailedError(CollectorError):
    """Raised to RQ when a job failed; its text is already masked (RQ stores it)."""

    code = "job_failed"


class ForeignJobError(CollectorError):
    """A job in Redis names a function, callback or payload that is not collector's own; refused unimported."""

    code = "foreign_job"


class PickleRefusedError(CollectorError):
    """RQ was asked to (un)pickle: a caller named no serializer. collector reads and writes RQ data as JSON only."""

    code = "pickle_refused"


class ServiceError(CollectorError):
    """The service answered with an error: `status` and its JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        if isinstance(body, dict):
            text = f"{body.get('error', 'error')}: {body.get('message', '')}"
        else:
            text = f"HTTP {status}: {str(body)[:200]}"
        super().__init__(text, details=body.get("details", {}) if isinstance(body, dict) else {})


class SpecSourceError(CollectorError):
    """A local command could not get a usable job spec; the message says what to give instead."""

    code = "spec_source_error"


class ScaffoldError(CollectorError):
    """`new-platform` cannot write the files; the message says what to change."""

    code = "scaffold_error"


class JobSuspended(BaseException):
    """Raised by `ctx.wait_for` and `ctx.wait_children` to end this attempt and free the worker; the job waits.

    A `BaseException`, so a platform's `except Exception` does not swallow it."""

    def __init__(self, wait: dict[str, Any]) -> None:
        super().__init__(f"waiting for {wait.get('name') or 'children'}")
        self.wait = wait
