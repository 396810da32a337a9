"""Sub-jobs: a running job queues them (`ctx.spawn`), reads their state, and is queued again when the last ends."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis
from redis.client import Pipeline

from collector.config import Config
from collector.specs.registry import Registry
from collector.store.records import ENDED, JobStore, decode_fields, run_watched
from collector.store.rq import RQ
from collector.submit.submitter import Submitter
from collector.workflows.ends import Ends

log = logging.getLogger(__name__)


class JobLinks:
    """What a running job's context uses to queue sub-jobs and read their state (the runner builds it)."""

    def __init__(self, *, connection: redis.Redis, config: Config, registry: Registry) -> None:
        self.connection, self.config, self.registry = connection, config, registry
        self.store = JobStore(connection, config)
        self.can_take_input = bool(config.secret_key)
        self._submitter: Submitter | None = None

    def spawn(self, parent_id: str, child_id: str, body: dict[str, Any]) -> bool:
        """Queue `body` as `child_id` unless an earlier attempt did; True when queued now. A child whose spec names
        no priority gets its parent's."""
        if self.store.exists(child_id):
            return False
        if isinstance(body, dict) and "priority" not in body:
            inherited = self.store.read(parent_id, "priority").get("priority")
            body = {**body, "priority": inherited} if inherited else body
        if self._submitter is None:
            self._submitter = Submitter(connection=self.connection, config=self.config, registry=self.registry)
        answer = self._submitter.submit(body, job_id=child_id, extra={"parent_id": parent_id})
        return answer["status"] == "queued"  # not `already_submitted`: an earlier attempt queued it meanwhile

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


def resume_parent(connection: redis.Redis, config: Config, parent_id: str) -> bool:
    """Queue `parent_id` again if it waits for children and all of them ended; True when it did."""
    store = JobStore(connection, config)
    key = store.keys.job(parent_id)
    rq = RQ(connection, config)
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
        job = rq.fetch(parent_id)
        pipe.multi()
        Ends(store, rq).resumed(pipe, parent_id, job=job, reason="children ended",
                 fields={"resumes": int(record.get("resumes") or 0) + 1}, timeout_s=record.get("timeout_s"))
        pipe.execute()
        log.info("job %s: its children ended; queued again", parent_id)
        return True

    return run_watched(connection, attempt)
