"""Step processes: ordered steps of platform and manual tasks, each step signed off before the next starts.

A task goes `pending` → `running` (a platform job) or `waiting` (a person's ack) → `ok` or `fail`; an operator
re-runs it (a new attempt: `pending` again) or finalizes its step: OK skips the failed tasks (`skipped`), FAIL
cancels what still runs (`canceled`) and fails the process. Every change is an entry in the process's history.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline

from collector.errors import ConflictError, NotFoundError, ValidationError
from collector.specs.job import JobSpec, validate_spec
from collector.specs.notify import PROCESS_EVENTS, targets
from collector.specs.secrets import merge_secrets, split_secrets
from collector.store.records import Keys, run_watched
from collector.submit.submitter import Submitter
from collector.types import iso
from collector.workflows.cancel import cancel
from collector.workflows.notify import queue_for_process
from collector.workflows.process_definition import (
    definition_version,
    parse_verdict,
    references,
    resolve,
    validate_definition,
)

JOB_ENDED = {"finished": "ok", "failed": "fail", "stopped": "fail", "canceled": "fail"}
STATUSES = ("running", "passed", "failed", "void")
SYSTEM = "collector"  # who made a change no person asked for (a job started or ended)
INDEX_SWEEP = 50  # oldest index entries each new process checks for expired processes
OPEN = ("pending", "running", "waiting")  # task statuses that have not come to an outcome yet
# What one attempt of a task keeps once a rerun starts the next.
ATTEMPT_FIELDS = ("attempt", "status", "job_id", "result", "error", "started_at", "ended_at", "acked_by", "acked_at",
                  "reason", "note")


def note_history(connection: Redis, keys: Keys, process_id: str, entry: dict[str, Any]) -> None:
    """Add `entry` (a notification's try) to a process's history; nothing when the process expired."""
    key = keys.process(process_id)

    def attempt(pipe: Pipeline) -> None:
        pipe.watch(key)
        raw = pipe.get(key)
        if raw is None:
            pipe.unwatch()
            return
        doc = json.loads(raw)
        doc["history"].append({"at": iso(), **entry})
        pipe.multi()
        pipe.set(key, json.dumps(doc), keepttl=True)
        pipe.execute()

    run_watched(connection, attempt)


class Processes:
    """Creates processes, records acknowledgements, reruns and finalizations, and advances them as jobs end."""

    def __init__(self, submitter: Submitter) -> None:
        self.submitter = submitter
        self.connection = submitter.connection
        self.keys = submitter.store.keys

    # -- requests --------------------------------------------------------------------------------------
    def run(self, body: Any, *, admit: Callable[[], None] | None = None) -> dict[str, Any]:
        """Start a process; `admit` is called once the definition is valid, before anything is written."""
        validate_definition(body, self.submitter)
        for i, step in enumerate(body["steps"]):
            for j, task in enumerate(step["tasks"]):
                self.submitter.refuse_a_schedules_state(task.get("state_key"), field=f"steps.{i}.tasks.{j}.state_key")
        if admit is not None:
            admit()
        process_id = uuid.uuid4().hex[:16]
        version = definition_version(body)
        steps = []
        for i, step in enumerate(body["steps"]):
            tasks = [self._new_task(task, key=f"s{i}t{j}") for j, task in enumerate(step["tasks"])]
            steps.append({"name": step["name"], "status": "pending", "finalized_at": None, "tasks": tasks})
        now = iso()
        doc = {
            "id": process_id, "name": body["name"], "version": version, "status": "running", "current_step": 0,
            "steps": steps, "created_at": now, "ended_at": None, "replaced_by": None,
            "history": [{"at": now, "event": "created", "version": version}],
            "notify": targets(body.get("notify"), events=PROCESS_EVENTS),
        }
        replaced = self._void_older(body["name"], version, process_id)
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.process(process_id), json.dumps(doc))
            pipe.sadd(self.keys.processes_named(body["name"]), process_id)
            pipe.sadd(self.keys.processes_active(), process_id)
            pipe.zadd(self.keys.processes_index(), {process_id: time.time()})
            pipe.execute()
        self._forget_expired()
        view = self.advance(process_id)
        view["replaced"] = replaced
        return view

    def _forget_expired(self) -> None:
        """Drop the oldest index entries whose process has expired, so the index grows no larger than what is kept
        (listing drops the ones it meets, too)."""
        index = self.keys.processes_index()
        oldest = [raw.decode() for raw in self.connection.zrange(index, 0, INDEX_SWEEP - 1)]
        docs = self.connection.mget([self.keys.process(i) for i in oldest]) if oldest else []
        gone = [process_id for process_id, raw in zip(oldest, docs, strict=True) if raw is None]
        if gone:
            self.connection.zrem(index, *gone)

    def get(self, process_id: str) -> dict[str, Any]:
        return self.advance(process_id)

    def ack(self, process_id: str, task_name: str, body: Any, *, by: str) -> dict[str, Any]:
        """Record `body`'s verdict on a task. `by` is who signs off (the API token's name); the body's own `by`,
        which older clients sent, is only a note, like `note`."""
        result, reason, note = parse_verdict(body, extra=frozenset({"by"}))
        if result == "FAIL" and not reason:
            raise ValidationError("a FAIL needs a reason", details={"reason": ["required with FAIL"]})

        def change(doc: dict[str, Any]) -> None:
            step, task = self._find_open_task(doc, task_name)
            if task["kind"] == "manual":
                if task["status"] not in ("waiting", "fail"):
                    raise ConflictError(f"task {task_name!r} is {task['status']}; only a waiting task takes an ack")
            elif not (task["status"] == "fail" and result == "FAIL"):
                raise ConflictError(
                    f"platform task {task_name!r} is {task['status']}; its job decides OK. Ack FAIL on a failed "
                    "platform task to give it up, which fails its step and the process."
                )
            else:
                task["given_up"] = True
            task.update(acked_by=by, reason=reason, acked_at=iso(), ended_at=iso(), **({"note": note} if note else {}))
            doc["history"].append({"at": iso(), "event": "ack", "step": step["name"], "task": task_name,
                                   "attempt": task["attempt"], "result": result, "by": by, "reason": reason,
                                   **({"note": note} if note else {})})
            if task["status"] != (outcome := "ok" if result == "OK" else "fail"):
                self._set(doc, step, task, outcome, by=by)

        self._update(process_id, change)
        return self.advance(process_id)

    def rerun(self, process_id: str, task_name: str, *, by: str, note: str | None = None) -> dict[str, Any]:
        """Run a task of the open step again as a new attempt; `by` is who asked (the API token's name), `note`
        the caller's own words. The earlier attempt is kept in the task's `attempts`."""
        def change(doc: dict[str, Any]) -> None:
            step, task = self._find_open_task(doc, task_name)
            if task["status"] not in ("ok", "fail"):
                raise ConflictError(f"task {task_name!r} is {task['status']}; a task is re-run once it came to an "
                                    "outcome (ok or fail), while its step is not finalized")
            task.setdefault("earlier", []).append({k: task.get(k) for k in ATTEMPT_FIELDS if task.get(k) is not None})
            for field in ("acked_by", "acked_at", "reason", "note", "started_at", "ended_at"):
                task.pop(field, None)
            task.update(attempt=task["attempt"] + 1, result=None, error=None, given_up=False, job_id=None)
            doc["history"].append({"at": iso(), "event": "rerun", "step": step["name"], "task": task_name,
                                   "attempt": task["attempt"], "by": by, **({"note": note} if note else {})})
            self._set(doc, step, task, "pending", by=by)

        self._update(process_id, change)
        return self.advance(process_id)

    def finalize(self, process_id: str, step_name: str, body: Any, *, by: str) -> dict[str, Any]:
        """Close the open step by hand. OK skips its failed tasks and moves on (every task must have come to an
        outcome); FAIL cancels what still runs or waits and fails the process."""
        result, reason, note = parse_verdict(body)
        said = {k: v for k, v in (("reason", reason), ("note", note)) if v}
        to_cancel: list[str] = []

        def change(doc: dict[str, Any]) -> None:
            to_cancel.clear()
            if doc["status"] != "running":
                raise ConflictError(f"process {doc['id']} is {doc['status']}; its steps are final")
            index = next((i for i, s in enumerate(doc["steps"]) if s["name"] == step_name), None)
            if index is None:
                raise NotFoundError(f"process {doc['id']} has no step {step_name!r}; its steps are "
                                    f"{[s['name'] for s in doc['steps']]}")
            step = doc["steps"][index]
            if step["finalized_at"] or index != doc["current_step"]:
                open_step = doc["steps"][doc["current_step"]]["name"]
                raise ConflictError(f"step {step_name!r} is {step['status']}, not open; the open step is "
                                    f"{open_step!r}")
            self._collect(doc, step)
            if result == "OK":
                busy = [t["name"] for t in step["tasks"] if t["status"] in OPEN]
                if busy:
                    raise ConflictError(f"tasks {busy} of step {step_name!r} have no outcome yet; wait for them (ack "
                                        "a manual one), or finalize FAIL to stop them")
                for task in step["tasks"]:
                    if task["status"] == "fail":
                        self._set(doc, step, task, "skipped", by=by)
            else:
                for task in step["tasks"]:
                    if task["status"] in OPEN:
                        if task["status"] == "running" and task.get("job_id"):
                            to_cancel.append(task["job_id"])
                        self._set(doc, step, task, "canceled", by=by)
            step.update(finalized_by=by, **said)
            doc["history"].append({"at": iso(), "event": "step_finalized", "step": step_name, "result": result,
                                   "by": by, **said})
            if result == "FAIL":
                self._close_step(doc, step, "failed")
                self._end(doc, "failed")

        self._update(process_id, change)
        for job_id in to_cancel:
            try:
                cancel(self.connection, self.submitter.config, job_id, by=by,
                       reason=f"step {step_name!r} of process {process_id} finalized FAIL")
            except (ConflictError, NotFoundError):
                pass  # it ended meanwhile: nothing to stop
        return self.advance(process_id)

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, process_id: str) -> dict[str, Any] | None:
        """The stored document as it is (no advancing), or None when unknown or expired."""
        raw = self.connection.get(self.keys.process(process_id))
        return json.loads(raw) if raw is not None else None

    def active(self) -> list[dict[str, Any]]:
        """Every running process's document."""
        ids = sorted(raw.decode() for raw in self.connection.smembers(self.keys.processes_active()))
        docs = self.connection.mget([self.keys.process(i) for i in ids]) if ids else []
        return [json.loads(raw) for raw in docs if raw is not None]

    # -- driving ---------------------------------------------------------------------------------------
    def advance_all(self) -> None:
        """What pools call every second: move every active process along."""
        for raw in self.connection.smembers(self.keys.processes_active()):
            self.advance(raw.decode())

    def advance(self, process_id: str) -> dict[str, Any]:
        """Submit what is due, collect ended jobs, finalize steps; returns the process's view."""
        to_submit: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

        def change(doc: dict[str, Any]) -> None:
            to_submit.clear()
            while doc["status"] == "running":
                step = doc["steps"][doc["current_step"]]
                if step["status"] == "pending":
                    step["status"] = "running"
                    doc["history"].append({"at": iso(), "event": "step_started", "step": step["name"]})
                self._collect(doc, step)
                for task in step["tasks"]:
                    if task["status"] == "pending":
                        self._start(doc, step, task, to_submit)
                if not self._finalize(doc, step):
                    break

        doc = self._update(process_id, change)
        for job_id, settings, task in to_submit:
            spec = {"platform_id": task["platform_id"], "settings": settings}
            if task.get("state_key"):  # runs of the task, and of other jobs with the key, hand their state on
                spec["state_key"] = task["state_key"]
            self.submitter.submit(spec, job_id=job_id, extra={"process_id": process_id})
        if to_submit:
            self._cancel_strays(process_id, [job_id for job_id, _, _ in to_submit])
        return self._view(doc)

    def _cancel_strays(self, process_id: str, job_ids: list[str]) -> None:
        """A step finalized FAIL between our write and our submits leaves jobs no task waits for: stop them."""
        doc = self.read(process_id)
        wanted = {t["job_id"] for s in doc["steps"] for t in s["tasks"] if t["status"] == "running"} if doc else set()
        for job_id in set(job_ids) - wanted:
            try:
                cancel(self.connection, self.submitter.config, job_id, by=SYSTEM,
                       reason=f"its task in process {process_id} was closed before it started")
            except (ConflictError, NotFoundError):
                pass

    def _start(self, doc: dict[str, Any], step: dict[str, Any], task: dict[str, Any],
               to_submit: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        """A pending task starts: a manual one waits for its ack, a platform one gets its settings (references
        resolved) and a job; settings that do not hold up fail the task with the reason."""
        task["started_at"] = iso()
        if task["kind"] == "manual":
            self._set(doc, step, task, "waiting", by=SYSTEM)
            return
        settings = task["settings"]
        if task.get("secrets"):
            sealer = self.submitter.sealer
            assert sealer is not None
            settings = merge_secrets(settings, sealer.unseal(task["secrets"]))
        try:
            if task.get("refers"):
                results = {t["name"]: t["result"] for s in doc["steps"][:doc["current_step"]] for t in s["tasks"]
                           if t["status"] == "ok"}
                settings = resolve(settings, results)
            validate_spec({"platform_id": task["platform_id"], "settings": settings}, self.submitter.registry)
        except ValidationError as exc:
            task.update(error={"type": "ValidationError", "message": exc.message, "details": exc.details},
                        ended_at=iso())
            self._set(doc, step, task, "fail", by=SYSTEM)
            return
        task["job_id"] = f"{doc['id']}-{task['key']}-{task['attempt']}"
        self._set(doc, step, task, "running", by=SYSTEM, job_id=task["job_id"])
        to_submit.append((task["job_id"], settings, task))

    def _collect(self, doc: dict[str, Any], step: dict[str, Any]) -> None:
        running = [t for t in step["tasks"] if t["status"] == "running"]
        if not running:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            for task in running:
                pipe.hmget(self.submitter.store.keys.job(task["job_id"]), ["status", "result", "error", "ended_at"])
            answers = pipe.execute()
        for task, (status, result, error, ended_at) in zip(running, answers, strict=True):
            if status is None:  # the submit never landed (Redis went away in between): submit again
                task["status"] = "pending"
                continue
            verdict = JOB_ENDED.get(status.decode())
            if verdict:
                task["result"] = json.loads(result) if result else None
                task["error"] = json.loads(error) if error else None
                task["ended_at"] = ended_at.decode() if ended_at else iso()
                self._set(doc, step, task, verdict, by=SYSTEM, job_id=task["job_id"], job_status=status.decode())

    def _finalize(self, doc: dict[str, Any], step: dict[str, Any]) -> bool:
        """Freeze a step that passed (True: go on) or that was given up (process failed)."""
        statuses = [t["status"] for t in step["tasks"]]
        if all(s in ("ok", "skipped") for s in statuses):
            self._close_step(doc, step, "passed")
            if doc["current_step"] + 1 == len(doc["steps"]):
                self._end(doc, "passed")
                return False
            doc["current_step"] += 1
            return True
        if any(t.get("given_up") for t in step["tasks"]):
            self._close_step(doc, step, "failed")
            self._end(doc, "failed")
        elif "fail" in statuses and not any(s in ("pending", "running") for s in statuses):
            if step["status"] != "blocked":
                step["status"] = "blocked"  # a person decides: re-run, or finalize the step OK or FAIL
                doc["history"].append({"at": iso(), "event": "step_blocked", "step": step["name"],
                                       "failed": [t["name"] for t in step["tasks"] if t["status"] == "fail"]})
        elif step["status"] == "blocked":
            step["status"] = "running"
        return False

    def _close_step(self, doc: dict[str, Any], step: dict[str, Any], status: str) -> None:
        step.update(status=status, finalized_at=iso())
        doc["history"].append({"at": step["finalized_at"], "event": f"step_{status}", "step": step["name"]})

    def _end(self, doc: dict[str, Any], status: str) -> None:
        doc.update(status=status, ended_at=iso())
        doc["history"].append({"at": doc["ended_at"], "event": f"process_{status}"})

    @staticmethod
    def _set(doc: dict[str, Any], step: dict[str, Any], task: dict[str, Any], status: str, *, by: str,
             **more: Any) -> None:
        """Change a task's status and say so in the history: who, when, which attempt, from what to what."""
        entry = {"at": iso(), "event": "task", "step": step["name"], "task": task["name"], "attempt": task["attempt"],
                 "from": task["status"], "status": status, "by": by, **more}
        task["status"] = status
        doc["history"].append(entry)

    # -- storage ---------------------------------------------------------------------------------------
    def _new_task(self, task: dict[str, Any], *, key: str) -> dict[str, Any]:
        base = {"name": task["name"], "key": key, "status": "pending", "attempt": 1, "job_id": None, "result": None,
                "error": None}
        if task.get("manual"):
            return {**base, "kind": "manual", "prompt": task.get("prompt", "")}
        given = task.get("settings", {})
        refers = sorted({path[0] for path, _ in references(given)})
        if refers:  # checked in full when the task starts, with the values referred to
            platform = self.submitter.registry.platforms[task["platform_id"]]
            spec = JobSpec(platform, {k: v for k, v in given.items() if k not in refers}, None)
        else:
            spec = validate_spec({"platform_id": task["platform_id"], "settings": given}, self.submitter.registry)
        masked, secrets = split_secrets(spec)
        masked.update({k: given[k] for k in refers})
        sealed = None
        if secrets:
            if self.submitter.sealer is None:
                raise ValidationError("the process has secrets but the service has no COLLECTOR_SECRET_KEY")
            sealed = self.submitter.sealer.seal(secrets)
        optional = {"refers": refers, "state_key": task.get("state_key")}
        return {**base, "kind": "platform", "platform_id": spec.platform.id, "settings": masked, "secrets": sealed,
                **{name: value for name, value in optional.items() if value}}

    def _find_open_task(self, doc: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if doc["status"] != "running":
            raise ConflictError(f"process {doc['id']} is {doc['status']}; it takes no more acks or reruns")
        self._collect(doc, doc["steps"][doc["current_step"]])  # judge the task by its job's latest state
        for index, step in enumerate(doc["steps"]):
            for task in step["tasks"]:
                if task["name"] == name:
                    if step["finalized_at"] or index != doc["current_step"]:
                        raise ConflictError(f"task {name!r} is in step {step['name']!r}, which is not open now")
                    return step, task
        raise NotFoundError(f"process {doc['id']} has no task {name!r}")

    def _update(self, process_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read-modify-write of a process document under WATCH, so concurrent acks and pools never clash."""
        key = self.keys.process(process_id)

        def attempt(pipe: Pipeline) -> dict[str, Any]:
            pipe.watch(key)
            raw = pipe.get(key)
            if raw is None:
                raise NotFoundError(f"no process {process_id!r}; POST /process/run answered its id")
            doc = json.loads(raw)
            before = copy.deepcopy(doc)
            change(doc)
            pipe.multi()
            if doc != before:
                pipe.set(key, json.dumps(doc))
                queue_for_process(pipe, self.keys, before, doc)
            if doc["status"] != "running":
                pipe.srem(self.keys.processes_active(), process_id)
                pipe.expire(key, self.submitter.config.failed_record_ttl_s)
            pipe.execute()
            return doc

        return run_watched(self.connection, attempt)

    def _void_older(self, name: str, version: str, new_id: str) -> list[str]:
        voided = []
        for raw in self.connection.smembers(self.keys.processes_named(name)):
            other = raw.decode()

            def change(doc: dict[str, Any]) -> None:
                if doc["status"] == "running" and doc["version"] != version:
                    self._end(doc, "void")
                    doc["replaced_by"] = new_id
                    voided.append(doc["id"])

            try:
                self._update(other, change)
            except NotFoundError:
                self.connection.srem(self.keys.processes_named(name), other)
        return voided

    @staticmethod
    def _view(doc: dict[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(doc)
        view["process_id"] = view.pop("id")
        for step in view["steps"]:
            for task in step["tasks"]:
                task.pop("secrets", None)
                current = {k: task.get(k) for k in ATTEMPT_FIELDS if task.get(k) is not None}
                task["attempts"] = [*task.pop("earlier", []), current]
        return view
