"""Jobs that wait: for outside input (`ctx.wait_for`, resumed with a token) or for their sub-jobs (`ctx.spawn`).

A waiting job holds no worker. Its record says `status: waiting` and `waiting: {kind, ...}`; it is queued again
by `POST /execution/resume` (input), by its last child ending (children), and failed by the maintenance tick
when its wait times out. Resume tokens are derived from a random nonce with the service's secret key: Redis
holds the nonce, never the token, and a used nonce is kept only to tell a reused token apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from collector import defaults, metrics
from collector.config import Config
from collector.errors import ConfigError, ConflictError, ForbiddenError, NotFoundError
from collector.sealing import Sealer
from collector.state import ENDED, JobStore, decode_fields, run_watched, utcnow

log = logging.getLogger(__name__)

USED_KEPT = 20          # used nonces kept per job, to answer "already used" rather than "wrong"
SWEEP_LIMIT = 100       # timed-out waits settled per maintenance tick


def resume_token(secret_key: str, job_id: str, nonce: str) -> str:
    """The token that resumes `job_id` from the wait `nonce` names: an HMAC, so only the key's holders make one."""
    key = hashlib.sha256(f"collector-resume:{secret_key}".encode()).digest()
    mac = hmac.new(key, f"{job_id}\0{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _matches(secret_key: str, job_id: str, nonce: str | None, token: str) -> bool:
    return bool(nonce) and hmac.compare_digest(resume_token(secret_key, job_id, str(nonce)).encode(), token.encode())


def input_secrets(inputs: Any) -> list[str]:
    """The texts in resume inputs to mask in logs and answers (shorter ones would garble every line they occur in)."""
    if isinstance(inputs, dict):
        return [t for v in inputs.values() for t in input_secrets(v)]
    if isinstance(inputs, list):
        return [t for v in inputs for t in input_secrets(v)]
    if isinstance(inputs, str | int | float) and not isinstance(inputs, bool):
        text = str(inputs)
        return [text] if len(text) >= defaults.SECRET_MASK_MIN_CHARS else []
    return []


class JobLinks:
    """What a running job's context uses to queue sub-jobs and read their state (the runner builds it)."""

    def __init__(self, *, connection: redis.Redis, config: Config, registry: Any) -> None:
        self.connection, self.config, self.registry = connection, config, registry
        self.store = JobStore(connection, config)
        self.can_take_input = bool(config.secret_key)
        self._submitter: Any = None

    def spawn(self, parent_id: str, child_id: str, body: dict[str, Any]) -> bool:
        """Queue `body` as `child_id` unless an earlier attempt did; True when queued now."""
        if self.store.exists(child_id):
            return False
        if self._submitter is None:
            from collector.jobs import Submitter

            self._submitter = Submitter(connection=self.connection, config=self.config, registry=self.registry)
        self._submitter.submit(body, job_id=child_id, extra={"parent_id": parent_id})
        return True

    def read_children(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return read_children(self.connection, self.store, list(ids))


def read_children(connection: redis.Redis, store: JobStore, ids: list[str], *, brief: bool = False
                  ) -> dict[str, dict[str, Any]]:
    """Child id → `{"status", "platform_id", "result" or "error"}` (`brief`: status and platform only)."""
    names = ["status", "platform_id"] if brief else ["status", "platform_id", "result", "error"]
    with connection.pipeline(transaction=False) as pipe:
        for child in ids:
            pipe.hmget(store.keys.job(child), names)
        answers = pipe.execute()
    found: dict[str, dict[str, Any]] = {}
    for child, values in zip(ids, answers, strict=True):
        record = decode_fields(names, values)
        if "status" not in record:
            found[child] = {"status": "failed", "platform_id": None,
                            "error": {"type": "NotFoundError", "message": "the child's record expired or was deleted"}}
            continue
        entry = {"status": record["status"], "platform_id": record.get("platform_id")}
        if not brief:
            if record["status"] == "finished":
                entry["result"] = record.get("result")
            elif record["status"] in ENDED:
                entry["error"] = {k: v for k, v in (record.get("error") or {}).items() if k in ("type", "message")}
        found[child] = entry
    return found


def _queue(connection: redis.Redis, config: Config) -> Queue:
    return Queue(config.queue_name, connection=connection, serializer=JSONSerializer)


def _fetch(connection: redis.Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def _requeue(pipe: Any, store: JobStore, queue: Queue, job_id: str, job: Job | None, *, reason: str,
             fields: dict[str, Any], timeout_s: Any = None, by: str | None = None) -> None:
    """Queue a waiting job again (on `pipe`, inside MULTI): it starts over from its checkpoint."""
    store.update(job_id, {"status": "queued", "enqueued_at": utcnow(), **fields}, pipe)
    pipe.hdel(store.keys.job(job_id), "waiting", "wait_nonce")
    pipe.zrem(store.keys.wait_deadlines(), job_id)
    pipe.srem(store.keys.waiting_parents(), job_id)
    store.event(job_id, "resumed", pipe, reason=reason, **({"by": by} if by else {}))
    if job is not None:
        queue._enqueue_job(job, pipeline=pipe)
    else:  # RQ's job hash is gone (flushed): make a new one with the same id
        from collector.jobs import RUN_FUNCTION

        queue.enqueue_call(RUN_FUNCTION, job_id=job_id, timeout=timeout_s or store.config.job_timeout_s,
                           result_ttl=store.config.record_ttl_s, failure_ttl=store.config.failed_record_ttl_s,
                           pipeline=pipe)


def suspend(connection: redis.Redis, store: JobStore, job_id: str, wait: dict[str, Any],
            fields: dict[str, Any]) -> str:
    """Record that a running job now waits (`wait` from `JobSuspended`). Returns `waiting`; `queued` when its
    children all ended meanwhile (queued again at once); `stopped` when a cancel came first (nothing written)."""
    key = store.keys.job(job_id)
    children = list(wait.get("children") or [])
    child_keys = [store.keys.job(c) for c in children]
    queue = _queue(connection, store.config)
    timeout = wait.get("timeout_s")

    def attempt(pipe: Pipeline) -> str:
        # WATCH the children too: one ending between our look and our write makes us look again,
        # and one ending after our write finds us waiting and queues us.
        pipe.watch(key, *child_keys)
        values = pipe.hmget(key, ["cancel_requested_at", "resumes", "timeout_s"])
        if values[0]:
            pipe.unwatch()
            return "stopped"
        resumes = int(values[1] or 0)
        pending = [c for c, k in zip(children, child_keys, strict=True)
                   if (s := pipe.hget(k, "status")) is not None and s.decode() not in ENDED]
        if wait["kind"] == "children" and not pending:
            job = _fetch(connection, job_id)
            pipe.multi()
            _requeue(pipe, store, queue, job_id, job, reason="children ended",
                     fields={**fields, "resumes": resumes + 1}, timeout_s=values[2])
            status = "queued"
        else:
            shown: dict[str, Any] = {"kind": wait["kind"], "since": utcnow()}
            if wait["kind"] == "input":
                shown.update(name=wait["name"], prompt=wait.get("prompt", ""))
            else:
                shown["children"] = pending
            if timeout:
                shown.update(timeout_s=timeout, until=_iso(time.time() + timeout))
            record = {"status": "waiting", "waiting": shown, **fields}
            if wait["kind"] == "input":
                record["wait_nonce"] = secrets.token_urlsafe(18)
            pipe.multi()
            store.update(job_id, record, pipe)
            if timeout:
                pipe.zadd(store.keys.wait_deadlines(), {job_id: time.time() + timeout})
            if wait["kind"] == "children":
                pipe.sadd(store.keys.waiting_parents(), job_id)
            pipe.hset(Job.key_for(job_id), "status", JobStatus.DEFERRED.value)
            store.event(job_id, "waiting", pipe, wait=wait["kind"],
                        **{k: v for k, v in shown.items() if k not in ("since", "kind")})
            status = "waiting"
        pipe.srem(store.keys.cancels(), job_id)
        pipe.execute()
        return status

    return run_watched(connection, attempt)


def resume(connection: redis.Redis, config: Config, job_id: str, *, token: str, given: Any,
           by: str = "a client") -> dict[str, Any]:
    """`POST /execution/resume`: check the token, seal the input, queue the job again. Wrong or used tokens
    raise `ForbiddenError`, a job not waiting for input `ConflictError`; neither changes anything. `by` (the API
    token's name) is recorded as `resumed_by` and on the `resumed` event."""
    if not config.secret_key:
        raise ConfigError("the API has no COLLECTOR_SECRET_KEY, so it cannot check resume tokens; set it (the same "
                          "value for the API and the workers)")
    sealer = Sealer(config.secret_key)
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    queue = _queue(connection, config)
    names = ["status", "waiting", "wait_nonce", "wait_used", "inputs", "resumes", "timeout_s"]

    def attempt(pipe: Pipeline) -> dict[str, Any]:
        pipe.watch(key)
        values = pipe.hmget(key, names)
        record = decode_fields(names, values)
        status = record.get("status")
        if status is None:
            raise NotFoundError(f"no job {job_id!r}: it never existed or its record expired; check the id",
                                details={"job_id": job_id})
        used = list(record.get("wait_used") or [])
        if any(_matches(config.secret_key, job_id, nonce, token) for nonce in used):
            raise ForbiddenError(
                f"this resume token of job {job_id} was already used; a token resumes once. "
                "GET /execution/get shows the current one while the job waits",
                details={"job_id": job_id, "token": ["already used"]},
            )
        wait = record.get("waiting") or {}
        if status != "waiting" or wait.get("kind") != "input":
            what = "its children" if wait.get("kind") == "children" else None
            raise ConflictError(
                f"job {job_id} is {status!r}" + (f", waiting for {what} (it resumes by itself)" if what
                                                 else ", not waiting for input")
                + "; only a job waiting for input (status 'waiting') can be resumed",
                details={"job_id": job_id, "status": status},
            )
        if not _matches(config.secret_key, job_id, record.get("wait_nonce"), token):
            raise ForbiddenError(
                f"the token does not resume job {job_id}; use the resume_token GET /execution/get shows "
                "under waiting",
                details={"job_id": job_id, "token": ["does not match"]},
            )
        inputs = sealer.unseal(record["inputs"]) if record.get("inputs") else {}
        inputs[wait["name"]] = given
        job = _fetch(connection, job_id)
        pipe.multi()
        _requeue(pipe, store, queue, job_id, job, reason=f"input {wait['name']!r} delivered", fields={
            "inputs": sealer.seal(inputs),
            "wait_used": [*used, record["wait_nonce"]][-USED_KEPT:],
            "resumes": int(record.get("resumes") or 0) + 1,
            "resumed_by": by,
        }, timeout_s=record.get("timeout_s"), by=by)
        pipe.execute()
        return {"job_id": job_id, "status": "queued", "resumed": wait["name"], "resumed_by": by}

    return run_watched(connection, attempt)


def resume_parent(connection: redis.Redis, config: Config, parent_id: str) -> bool:
    """Queue `parent_id` again if it waits for children and all of them ended; True when it did."""
    store = JobStore(connection, config)
    key = store.keys.job(parent_id)
    queue = _queue(connection, config)
    names = ["status", "waiting", "resumes", "timeout_s"]

    def attempt(pipe: Pipeline) -> bool:
        pipe.watch(key)
        values = pipe.hmget(key, names)
        record = decode_fields(names, values)
        wait = record.get("waiting") or {}
        if record.get("status") != "waiting" or wait.get("kind") != "children":
            pipe.unwatch()
            if record.get("status") != "waiting":
                connection.srem(store.keys.waiting_parents(), parent_id)
            return False
        statuses = read_children(connection, store, list(wait.get("children") or []), brief=True)
        if any(s["status"] not in ENDED for s in statuses.values()):
            pipe.unwatch()
            return False
        job = _fetch(connection, parent_id)
        pipe.multi()
        _requeue(pipe, store, queue, parent_id, job, reason="children ended",
                 fields={"resumes": int(record.get("resumes") or 0) + 1}, timeout_s=record.get("timeout_s"))
        pipe.execute()
        log.info("job %s: its children ended; queued again", parent_id)
        return True

    return run_watched(connection, attempt)


def time_out(connection: redis.Redis, config: Config, job_id: str) -> bool:
    """Fail a job whose wait ran past its deadline (and cancel the children it still waited for)."""
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    queue = _queue(connection, config)
    names = ["status", "waiting", "platform_id", "parent_id"]

    def attempt(pipe: Pipeline) -> tuple[dict[str, Any], dict[str, Any], str] | None:
        """The failed job's record, wait and message; None when it no longer waits."""
        pipe.watch(key)
        values = pipe.hmget(key, names)
        record = decode_fields(names, values)
        wait = record.get("waiting") or {}
        if record.get("status") != "waiting":
            pipe.multi()
            pipe.zrem(store.keys.wait_deadlines(), job_id)
            pipe.execute()
            return None
        message = _timeout_message(wait)
        job = _fetch(connection, job_id)
        pipe.multi()
        store.update(job_id, {"status": "failed", "ended_at": utcnow(),
                              "error": {"type": "WaitTimeoutError", "message": message}}, pipe)
        pipe.hdel(key, "wait_nonce")
        pipe.zrem(store.keys.wait_deadlines(), job_id)
        pipe.srem(store.keys.waiting_parents(), job_id)
        store.event(job_id, "failed", pipe, error={"type": "WaitTimeoutError", "message": message})
        store.expire(job_id, store.ttl_for("failed"), pipe)
        metrics.count(pipe, store.keys, "failed", record.get("platform_id", ""))
        if job is not None:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            queue.failed_job_registry.add(job, ttl=config.failed_record_ttl_s, exc_string=message,
                                          pipeline=pipe)
        pipe.execute()
        return record, wait, message

    failed = run_watched(connection, attempt)
    if failed is None:
        return False
    record, wait, message = failed
    log.info("job %s failed: %s", job_id, message)
    if wait.get("kind") == "children":
        cancel_children(connection, config, list(wait.get("children") or []), by=f"parent job {job_id} (timed out)")
    if record.get("parent_id"):
        resume_parent(connection, config, record["parent_id"])
    return True


def _timeout_message(wait: dict[str, Any]) -> str:
    timeout = f"{float(wait.get('timeout_s') or 0):g}"
    if wait.get("kind") == "children":
        pending = wait.get("children") or []
        return (f"children {', '.join(pending[:5])}{' ...' if len(pending) > 5 else ''} did not end within "
                f"timeout_s={timeout} s of ctx.wait_children; they were canceled. Give wait_children a longer "
                "timeout_s if they need longer")
    prompt = wait.get("prompt") or ""
    return (f"no input for {wait.get('name')!r} arrived within timeout_s={timeout} s"
            + (f" (prompt: {prompt[:200]!r})" if prompt else "")
            + "; resume sooner with POST /execution/resume, or give ctx.wait_for a longer timeout_s")


def cancel_children(connection: redis.Redis, config: Config, children: Iterable[str], *, by: str) -> list[str]:
    """Cancel every child that has not ended; returns the ids a cancel reached."""
    from collector.control import cancel

    reached = []
    for child in children:
        try:
            cancel(connection, config, child, by=by)
            reached.append(child)
        except (ConflictError, NotFoundError):
            continue  # already ended or expired: nothing to cancel
    return reached


def sweep(connection: redis.Redis, config: Config) -> None:
    """The maintenance duty: fail waits past their deadline; queue parents whose children all ended (a backstop
    for the resume each child's end triggers)."""
    store = JobStore(connection, config)
    due = connection.zrangebyscore(store.keys.wait_deadlines(), 0, time.time(), start=0, num=SWEEP_LIMIT)
    for raw in due:
        time_out(connection, config, raw.decode())
    for raw in connection.smembers(store.keys.waiting_parents()):
        resume_parent(connection, config, raw.decode())


def describe(connection: redis.Redis, config: Config, view: dict[str, Any]) -> dict[str, Any]:
    """`GET /execution/get`'s extras: the resume token of a job waiting for input, the children's statuses."""
    store = JobStore(connection, config)
    job_id = view["job_id"]
    wait = view.get("waiting")
    if view.get("status") == "waiting" and isinstance(wait, dict) and wait.get("kind") == "input":
        nonce = store.read(job_id, "wait_nonce").get("wait_nonce")
        if nonce and config.secret_key:
            wait["resume_token"] = resume_token(config.secret_key, job_id, nonce)
            wait["resume"] = f"POST /execution/resume?job_id={job_id} with {{\"token\": ..., \"input\": {{...}}}}"
    elif view.get("status") != "waiting":
        view.pop("waiting", None)
    children = view.get("children")
    if isinstance(children, list) and children:
        found = read_children(connection, store, [str(c) for c in children], brief=True)
        view["children"] = [{"job_id": c, **found[c]} for c in found]
    return view


def _iso(epoch: float) -> str:
    import datetime as dt

    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
