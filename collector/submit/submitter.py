"""Submitting jobs: validate a spec against its platform, seal its secrets, write the record and enqueue."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import redis

from collector.config import Config
from collector.errors import ConfigError, ConflictError, ValidationError
from collector.resources import reach
from collector.sealing import Sealer
from collector.specs.caps import cap_key
from collector.specs.job import JobSpec, validate_spec
from collector.specs.policy import RetryPolicy, job_timeout
from collector.specs.registry import Registry
from collector.specs.secrets import split_secrets
from collector.store import idempotency, index, metrics
from collector.store.records import JobStore, redis_down, redis_full, run_watched
from collector.store.replication import ReplicatedPipeline, not_replicated
from collector.store.rq import RQ
from collector.types import iso, new_job_id

DESCRIPTION_ID_CHARS = 64  # of a client's `_id`, in the job's description on rq-dashboard
UNSAFE_IN_DESCRIPTION = re.compile(r"[^A-Za-z0-9_.:/@#+=-]")


class Submitter:
    """What `POST /execution/run` calls: validates, seals, writes the record and enqueues in one transaction."""

    def __init__(self, *, connection: redis.Redis, config: Config, registry: Registry) -> None:
        self.connection = connection
        self.config = config
        self.registry = registry
        reach.ensure(config)  # the connections and data root specs are checked against
        self.store = JobStore(connection, config)
        self.rq = RQ(connection, config)
        self.sealer = Sealer(config.secret_key) if config.secret_key else None

    def submit(
        self, body: Any, *, job_id: str | None = None, extra: Mapping[str, Any] | None = None,
        admit: Callable[[], None] | None = None, scope: str = "", replicated: bool = False,
    ) -> dict[str, Any]:
        """Queue the job `body` describes. `job_id` and `extra` record fields are for collector's own
        submitters (schedules, processes), never taken from a request. `admit` is called once the spec is
        valid, before anything is written (the API counts the caller's submit rate there). A spec with an
        `idempotency_key` that `scope` (the caller) sent before, within COLLECTOR_IDEMPOTENCY_TTL_S, makes no new
        job: the answer names the first (`deduplicated`), or `ConflictError` when the spec differs. `replicated`
        returns only once COLLECTOR_REDIS_MIN_REPLICAS replicas hold the job (`NotReplicatedError` when fewer do
        in time). A given `job_id` is made once: when its record exists already, nothing is written and the answer
        is `{"job_id", "status": "already_submitted"}`."""
        spec = validate_spec(body, self.registry, max_timeout_s=self.config.max_timeout_s)
        given_id, job_id = job_id, job_id or new_job_id()
        fields = new_record(spec, self.sealer, no_key=(
            f"platform {spec.platform.id!r} was given secrets but this service has no "
            "COLLECTOR_SECRET_KEY to seal them with; set it (the same value for API and workers)"
        ))
        policy = RetryPolicy.resolve(spec.retry, self.config)
        timeout = job_timeout(spec.timeout_s, spec.platform.timeout_s, self.config)
        fields.update(retry=policy.to_dict(), max_attempts=policy.max_attempts, timeout_s=timeout)
        cap = cap_key(spec.platform, spec.concurrency_key, self.config)
        if cap is not None:
            fields["concurrency"] = cap
        fields.update(extra or {})
        once = self._once(spec, scope)

        def write(pipe: Any) -> dict[str, Any] | None:
            if given_id is not None:
                # A job id of collector's own (a tick, a task's attempt, a child) is made once: two submitters
                # racing (a process advanced from two places at once) must not queue it twice, nor write over a
                # record that is queued, running or ended already.
                pipe.watch(self.store.keys.job(given_id))
                if pipe.exists(self.store.keys.job(given_id)):
                    pipe.unwatch()
                    return {"job_id": given_id, "status": "already_submitted"}
            if once is not None:
                pipe.watch(once[0])  # two submits of one key at once: the second EXEC fails and looks again
                held = idempotency.first(pipe, once[0])
                if held is not None:
                    pipe.unwatch()
                    return self._duplicate(spec, first_job=held[0], same=held[1] == once[1])
            pipe.multi()  # explicit, or RQ would call multi() after our first command
            self.store.create(job_id, fields, pipe)
            self.store.event(job_id, "queued", pipe, platform_id=spec.platform.id, settings=fields["settings"])
            index.add(pipe, self.store.keys, self.config, job_id)
            # The safety net of a record not yet ended; its end (or next move) sets the TTL anew.
            self.store.expire(job_id, self.config.open_record_ttl_s, pipe, datasets=())
            metrics.job_submitted(pipe, self.store.keys, job_id=job_id, platform_id=spec.platform.id)
            self.rq.enqueue(pipe, job_id, timeout=timeout, description=description(spec), priority=spec.priority,
                            cap=cap)
            if once is not None:
                idempotency.remember(pipe, once[0], job_id=job_id, spec_hmac=once[1],
                                     ttl_s=self.config.idempotency_ttl_s)
            pipe.execute()
            return None

        try:
            if scope:  # a client's (a schedule's own runs and process tasks were checked when they were made)
                self.refuse_a_schedules_state(spec.state_key)
            if admit is not None:
                admit()
            replicas = self.config.redis_min_replicas if replicated else 0
            pipe = ReplicatedPipeline(self.connection, replicas=replicas,
                                      timeout_s=self.config.redis_min_replicas_wait_s)
            duplicate = run_watched(self.connection, write, pipe=pipe)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise redis_down(self.config, exc) from None
        except redis.exceptions.OutOfMemoryError:  # refused as a whole (MULTI): nothing was written
            raise redis_full(self.config) from None
        if duplicate is not None:
            return duplicate
        if pipe.short_of(replicas):
            raise not_replicated(self.config, job_id, acknowledged=pipe.acknowledged, failure=pipe.failure)
        metrics.submitted(job_id=job_id, platform_id=spec.platform.id)
        answer: dict[str, Any] = {"job_id": job_id, "status": "queued"}
        if spec.client_id is not None:
            answer["_id"] = spec.client_id
        return answer

    def refuse_a_schedules_state(self, state_key: str | None, *, field: str = "state_key") -> None:
        """`ValidationError` (under `field`) when `state_key` is a schedule's id: the schedule's runs keep their
        state under it, and any other job saving there (a client's, another schedule's, a process task's) would
        move or poison a bookmark that is the schedule's alone."""
        if state_key is not None and self.connection.exists(self.store.keys.schedule(state_key)):
            raise ValidationError(
                "1 field is refused; fix the field named in details and send it again",
                details={field: [f"state_key {state_key!r} is the id of a schedule, whose runs keep their saved "
                                 "state under it; only its own runs may use it: give another key"]})

    def _once(self, spec: JobSpec, scope: str) -> tuple[str, str] | None:
        """The Redis key of the spec's idempotency key and the HMAC of the spec; None without a key."""
        if spec.idempotency_key is None:
            return None
        secret = self.config.secret_key
        return (idempotency.key_for(self.store.keys, secret, scope=scope, idempotency_key=spec.idempotency_key),
                idempotency.digest(secret, "spec", spec.canonical()))

    def _duplicate(self, spec: JobSpec, *, first_job: str, same: bool) -> dict[str, Any]:
        """The answer to a submit whose idempotency key made `first_job` already (`same`: from the same spec)."""
        if not same:
            raise ConflictError(
                f"idempotency key {spec.idempotency_key!r} was used for a different job spec (job {first_job}) "
                f"within the last {self.config.idempotency_ttl_s} s (COLLECTOR_IDEMPOTENCY_TTL_S); send that same "
                "spec again to get its job, or use a new key for this one",
                details={"idempotency_key": spec.idempotency_key, "job_id": first_job},
            )
        status = self.store.read(first_job, "status").get("status") or "expired"
        answer: dict[str, Any] = {"job_id": first_job, "status": status, "deduplicated": True,
                                  "duplicate_of": first_job}
        if spec.client_id is not None:
            answer["_id"] = spec.client_id
        return answer


def description(spec: JobSpec) -> str:
    """The job as rq-dashboard lists it: its platform and the client's `_id`. The `_id` is the client's text and
    the dashboard's job page shows descriptions unescaped: only letters, digits and `-_.:/@#+=` pass, the rest
    shows as `?`, and at most DESCRIPTION_ID_CHARS of it."""
    if spec.client_id is None:
        return f"{spec.platform.id} job"
    shown = UNSAFE_IN_DESCRIPTION.sub("?", spec.client_id[:DESCRIPTION_ID_CHARS])
    more = "…" if len(spec.client_id) > DESCRIPTION_ID_CHARS else ""
    return f"{spec.platform.id} job, _id {shown}{more}"


def new_record(spec: JobSpec, sealer: Sealer | None, *, no_key: str) -> dict[str, Any]:
    """The fields a new job record starts with: `queued`, the settings masked, the secrets sealed
    (`ConfigError(no_key)` when there are secrets and no `sealer`)."""
    masked, secrets = split_secrets(spec)
    now = iso()
    fields: dict[str, Any] = {
        "status": "queued",
        "platform_id": spec.platform.id,
        "settings": masked,
        "created_at": now,
        "enqueued_at": now,
        "attempt": 0,
        "priority": spec.priority,
    }
    if spec.client_id is not None:
        fields["client_id"] = spec.client_id
    if spec.notify:
        fields["notify"] = spec.notify
    if spec.concurrency_key is not None:
        fields["concurrency_key"] = spec.concurrency_key
    if spec.state_key is not None:
        fields["state_key"] = spec.state_key
    if secrets:
        if sealer is None:
            raise ConfigError(no_key)
        fields["secrets"] = sealer.seal(secrets)
    return fields
