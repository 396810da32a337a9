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
from collections.abc import Mapping
from typing import Any

import redis
from redis.client import Pipeline

from collector import defaults
from collector.config import Config
from collector.errors import ConfigError, ConflictError, ForbiddenError, NotFoundError, ValidationError
from collector.sealing import Sealer
from collector.store.records import ENDED, JOB_ID, JobStore, Lease, decode_fields, run_watched
from collector.store.rq import RQ
from collector.types import iso
from collector.workflows.cancel import cancel_children
from collector.workflows.children import read_children, resume_parent
from collector.workflows.ends import Ends
from collector.workflows.notify import queue_for

log = logging.getLogger(__name__)

USED_KEPT = 20          # used nonces kept per job, to answer "already used" rather than "wrong"
SWEEP_LIMIT = 100       # timed-out waits settled per maintenance tick


def resume_token(secret_key: str, job_id: str, nonce: str) -> str:
    """The token that resumes `job_id` from the wait `nonce` names: an HMAC, so only the key's holders make one."""
    key = hashlib.sha256(f"collector-resume:{secret_key}".encode()).digest()
    mac = hmac.new(key, f"{job_id}\0{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def callback_token(secret_key: str, job_id: str, nonce: str) -> str:
    """The token of `GET /execution/callback`: the job's id and its resume token, so the link alone resumes it."""
    return f"{job_id}.{resume_token(secret_key, job_id, nonce)}"


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


def suspend(connection: redis.Redis, store: JobStore, job_id: str, wait: dict[str, Any],
            fields: dict[str, Any], *, lease: Lease | None = None) -> str:
    """Record that a running job now waits (`wait` from `JobSuspended`). Returns `waiting`; `queued` when its
    children all ended meanwhile (queued again at once); `stopped` when a cancel came first, `superseded` when the
    run no longer holds `lease` (its record moved on or is gone; marked on the lease): nothing written then."""
    key = store.keys.job(job_id)
    children = list(wait.get("children") or [])
    child_keys = [store.keys.job(c) for c in children]
    rq = RQ(connection, store.config)
    timeout = wait.get("timeout_s")

    def attempt(pipe: Pipeline) -> str:
        # WATCH the children too: one ending between our look and our write makes us look again,
        # and one ending after our write finds us waiting and queues us.
        pipe.watch(key, *child_keys)
        values = pipe.hmget(key, ["cancel_requested_at", "resumes", "timeout_s", "lease", "status", "concurrency"])
        if lease is not None and (values[3] is None or values[3].decode() != lease.token
                                  or values[4] != b"started"):
            pipe.unwatch()
            lease.lost = "gone" if values[4] is None else "taken"
            return "superseded"
        if values[0]:
            pipe.unwatch()
            return "stopped"
        resumes = int(values[1] or 0)
        pending = [c for c, k in zip(children, child_keys, strict=True)
                   if (s := pipe.hget(k, "status")) is not None and s.decode() not in ENDED]
        if wait["kind"] == "children" and not pending:
            job = rq.fetch(job_id)
            pipe.multi()
            Ends(store, rq).resumed(pipe, job_id, job=job, reason="children ended",
                     fields={**fields, "resumes": resumes + 1}, timeout_s=values[2])
            status = "queued"
        else:
            shown: dict[str, Any] = {"kind": wait["kind"], "since": iso()}
            if wait["kind"] == "input":
                shown.update(name=wait["name"], prompt=wait.get("prompt", ""),
                             **({"expects": wait["expects"]} if wait.get("expects") else {}))
            else:
                shown["children"] = pending
            if timeout:
                shown.update(timeout_s=timeout, until=iso(time.time() + timeout))
            record = {"status": "waiting", "waiting": shown, **fields}
            if wait["kind"] == "input":
                record["wait_nonce"] = secrets.token_urlsafe(18)
            pipe.multi()
            store.update(job_id, record, pipe)
            if timeout:
                pipe.zadd(store.keys.wait_deadlines(), {job_id: time.time() + timeout})
            if wait["kind"] == "children":
                pipe.sadd(store.keys.waiting_parents(), job_id)
            rq.defer(pipe, job_id)
            store.event(job_id, "waiting", pipe, wait=wait["kind"],
                        **{k: v for k, v in shown.items() if k not in ("since", "kind")})
            if wait["kind"] == "input":  # a person is needed; a wait for children ends by itself
                queue_for(pipe, store, job_id, "waiting", status="waiting", waiting=shown)
            status = "waiting"
        pipe.srem(store.keys.cancels(), job_id)
        # A job waiting for input or children holds no concurrency slot: it takes one anew when queued again.
        Ends(store, rq).slot_released(pipe, job_id, cap=values[5].decode() if values[5] else None)
        pipe.execute()
        return status

    return run_watched(connection, attempt)


def parse_resume(body: Any) -> tuple[str, dict[str, Any]]:
    """The token and input of a `POST /execution/resume` body; `ValidationError` lists every problem at once."""
    if not isinstance(body, dict):
        raise ValidationError(
            'the body must be a JSON object: {"token": "<waiting.resume_token of GET /execution/get>", '
            '"input": {...}}', details={"_schema": ["send a JSON object"]},
        )
    errors: dict[str, list[str]] = {}
    for key in sorted(set(body) - {"token", "input"}):
        errors[key] = ['Unknown field; a resume has only "token" and "input".']
    token = body.get("token")
    if not isinstance(token, str) or not token:
        errors["token"] = ["give the resume token (waiting.resume_token of GET /execution/get) as a string"]
    elif len(token) > 200:
        errors["token"] = [f"a resume token has 43 characters, not {len(token)}"]
    given = body.get("input", {})
    if not isinstance(given, dict):
        errors["input"] = ["give the input as a JSON object, e.g. {\"code\": \"...\"}"]
    if errors:
        raise ValidationError(
            f"the resume has {len(errors)} error(s); fix the fields named in details and send it again",
            details=errors,
        )
    return token, given


CALLBACK_MAX_FIELDS = 50  # query fields a callback's input may have


def parse_callback(query: Mapping[str, list[str]]) -> tuple[str, str, dict[str, Any]]:
    """The job id, resume token and input of a `GET /execution/callback` query: `token` is `<job id>.<resume
    token>` (as a notification or GET /execution/get gives it), the other fields are the input (one value as
    text, repeated ones as a list). `ValidationError` lists every problem at once."""
    errors: dict[str, list[str]] = {}
    tokens = query.get("token") or []
    job_id, _, token = (tokens[0] if len(tokens) == 1 else "").rpartition(".")
    if len(tokens) != 1 or not JOB_ID.fullmatch(job_id) or not token or len(token) > 200:
        errors["token"] = ["give the callback token once: waiting.callback of GET /execution/get, or the "
                           "callback link of a waiting notification"]
    given = {k: v[0] if len(v) == 1 else list(v) for k, v in query.items() if k != "token"}
    if len(given) > CALLBACK_MAX_FIELDS:
        errors["_schema"] = [f"at most {CALLBACK_MAX_FIELDS} query fields (got {len(given)})"]
    if errors:
        raise ValidationError(f"the callback has {len(errors)} error(s); open the link as it was given",
                              details=errors)
    return job_id, token, given


def resume(connection: redis.Redis, config: Config, job_id: str, *, token: str, given: Any,
           by: str = "a client") -> dict[str, Any]:
    """`POST /execution/resume`: check the token, seal the input, queue the job again. A job not waiting for input
    raises `ConflictError` (whatever the token), a wrong or used token `ForbiddenError`; neither changes anything.
    `by` (the API token's name) is recorded as `resumed_by` and on the `resumed` event."""
    if not config.secret_key:
        raise ConfigError("the API has no COLLECTOR_SECRET_KEY, so it cannot check resume tokens; set it (the same "
                          "value for the API and the workers)")
    sealer = Sealer(config.secret_key)
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    rq = RQ(connection, config)
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
        reused = any(_matches(config.secret_key, job_id, nonce, token) for nonce in used)
        wait = record.get("waiting") or {}
        # A job that does not wait is a conflict whatever the token: a used one must not hide that.
        if status != "waiting" or wait.get("kind") != "input":
            what = "its children" if wait.get("kind") == "children" else None
            raise ConflictError(
                f"job {job_id} is {status!r}" + (f", waiting for {what} (it resumes by itself)" if what
                                                 else ", not waiting for input")
                + "; only a job waiting for input (status 'waiting') can be resumed"
                + ("; this token was already used besides" if reused else ""),
                details={"job_id": job_id, "status": status, **({"token": ["already used"]} if reused else {})},
            )
        if reused:
            raise ForbiddenError(
                f"this resume token of job {job_id} was already used; a token resumes once. "
                "GET /execution/get shows the current one while the job waits",
                details={"job_id": job_id, "token": ["already used"]},
            )
        if not _matches(config.secret_key, job_id, record.get("wait_nonce"), token):
            raise ForbiddenError(
                f"the token does not resume job {job_id}; use the resume_token GET /execution/get shows "
                "under waiting",
                details={"job_id": job_id, "token": ["does not match"]},
            )
        inputs = sealer.unseal(record["inputs"]) if record.get("inputs") else {}
        inputs[wait["name"]] = given
        job = rq.fetch(job_id)
        pipe.multi()
        Ends(store, rq).resumed(pipe, job_id, job=job, reason=f"input {wait['name']!r} delivered", fields={
            "inputs": sealer.seal(inputs),
            "wait_used": [*used, record["wait_nonce"]][-USED_KEPT:],
            "resumes": int(record.get("resumes") or 0) + 1,
            "resumed_by": by,
        }, timeout_s=record.get("timeout_s"), by=by)
        pipe.execute()
        return {"job_id": job_id, "status": "queued", "resumed": wait["name"], "resumed_by": by}

    return run_watched(connection, attempt)


def time_out(connection: redis.Redis, config: Config, job_id: str) -> bool:
    """Fail a job whose wait ran past its deadline (and cancel the children it still waited for)."""
    store = JobStore(connection, config)
    key = store.keys.job(job_id)
    rq = RQ(connection, config)
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
        job = rq.fetch(job_id)
        pipe.multi()
        Ends(store, rq).wait_timed_out(pipe, job_id, job=job, message=message,
                                        platform_id=record.get("platform_id", ""))
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


def sweep(connection: redis.Redis, config: Config) -> None:
    """The maintenance duty: fail waits past their deadline; queue parents whose children all ended (a backstop
    for the resume each child's end triggers)."""
    store = JobStore(connection, config)
    due = connection.zrangebyscore(store.keys.wait_deadlines(), 0, time.time(), start=0, num=SWEEP_LIMIT)
    for raw in due:
        time_out(connection, config, raw.decode())
    for raw in connection.smembers(store.keys.waiting_parents()):
        resume_parent(connection, config, raw.decode())


def describe(connection: redis.Redis, config: Config, view: dict[str, Any], *, with_resume: bool = True
             ) -> dict[str, Any]:
    """`GET /execution/get`'s extras: the resume token and callback link of a job waiting for input (`with_resume`:
    for a caller who may resume it; else `resume` says which scope may), the children's statuses."""
    store = JobStore(connection, config)
    job_id = view["job_id"]
    wait = view.get("waiting")
    if view.get("status") == "waiting" and isinstance(wait, dict) and wait.get("kind") == "input":
        if not with_resume:
            wait["resume"] = "a token with scope 'operate' sees the resume token and callback link here"
        elif (nonce := store.read(job_id, "wait_nonce").get("wait_nonce")) and config.secret_key:
            wait["resume_token"] = resume_token(config.secret_key, job_id, nonce)
            wait["resume"] = f"POST /execution/resume?job_id={job_id} with {{\"token\": ..., \"input\": {{...}}}}"
            wait["callback"] = f"/execution/callback?token={callback_token(config.secret_key, job_id, nonce)}"
    elif view.get("status") != "waiting":
        view.pop("waiting", None)
    children = view.get("children")
    if isinstance(children, list) and children:
        found = read_children(connection, store, [str(c) for c in children], brief=True)
        view["children"] = [{"job_id": c, **found[c]} for c in found]
    return view
