"""Step processes: ordered steps of platform and manual tasks, each step signed off before the next starts."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline

from collector.errors import ConflictError, NotFoundError, ValidationError
from collector.specs.job import validate_spec
from collector.specs.notify import PROCESS_EVENTS, check_notify, targets
from collector.specs.secrets import merge_secrets, split_secrets
from collector.store.records import Keys, run_watched
from collector.submit.submitter import Submitter
from collector.types import iso
from collector.workflows.notify import queue_for_process

PROCESS_FIELDS = {"name", "version", "steps", "notify"}
STEP_FIELDS = {"name", "tasks"}
TASK_FIELDS = {"name", "platform_id", "settings", "manual", "prompt"}
VERDICTS = {"OK", "FAIL"}
NOTE_MAX_CHARS = 500  # longest note an ack or rerun keeps in the process's history
JOB_ENDED = {"finished": "ok", "failed": "fail", "stopped": "fail", "canceled": "fail"}


def _err(errors: dict[str, list[str]], path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def validate_definition(body: Any, submitter: Submitter) -> dict[str, Any]:
    """Check a process definition; all errors at once under paths like `steps.0.tasks.1.settings.rows`."""
    if not isinstance(body, dict):
        raise ValidationError("a process must be a JSON object", details={"_schema": ["send an object"]})
    errors: dict[str, list[str]] = {}
    for key in sorted(set(body) - PROCESS_FIELDS):
        _err(errors, key, "Unknown field.")
    if not isinstance(body.get("name"), str) or not 0 < len(body["name"]) <= 200:
        _err(errors, "name", "give the process a name of 1 to 200 characters")
    if "version" in body and not isinstance(body["version"], str | int):
        _err(errors, "version", "give the definition's version as a string")
    if body.get("notify") is not None:  # webhooks told of step changes, sign-offs awaited and the end
        errors.update(check_notify(body["notify"], events=PROCESS_EVENTS))
    steps = body.get("steps")
    if not isinstance(steps, list) or not steps:
        _err(errors, "steps", "give a non-empty list of steps, each {name, tasks: [...]}")
        steps = []
    step_names: set[str] = set()
    task_names: set[str] = set()
    for i, step in enumerate(steps):
        where = f"steps.{i}"
        if not _named_object(step, where, STEP_FIELDS, step_names, errors, shape="a step is an object {name, tasks}",
                             naming="give each step a unique, non-empty name"):
            continue
        tasks = step.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            _err(errors, f"{where}.tasks", "give a non-empty list of tasks")
            continue
        for j, task in enumerate(tasks):
            _check_task(task, f"{where}.tasks.{j}", task_names, errors, submitter)
    if errors:
        raise ValidationError(
            f"the process has {len(errors)} error(s); fix the fields named in details and send it again",
            details=errors,
        )
    return body


def _named_object(item: Any, where: str, allowed: set[str], names: set[str], errors: dict[str, list[str]], *,
                  shape: str, naming: str) -> bool:
    """Check a step or a task: an object with known fields and a name not used before. False when not an object."""
    if not isinstance(item, dict):
        _err(errors, where, shape)
        return False
    for key in sorted(set(item) - allowed):
        _err(errors, f"{where}.{key}", "Unknown field.")
    name = item.get("name")
    if not isinstance(name, str) or not name or name in names:
        _err(errors, f"{where}.name", naming)
    names.add(str(name))
    return True


def _check_task(task: Any, where: str, names: set[str], errors: dict[str, list[str]], submitter: Submitter) -> None:
    if not _named_object(task, where, TASK_FIELDS, names, errors,
                         shape="a task is an object: {name, platform_id, settings} or {name, manual: true, prompt}",
                         naming="give each task a name unique in the process (acks name it)"):
        return
    if task.get("manual") is True:
        if not isinstance(task.get("prompt", ""), str):
            _err(errors, f"{where}.prompt", "say what the person should check, as a string")
        if "platform_id" in task or "settings" in task:
            _err(errors, where, "a manual task has no platform_id or settings")
        return
    if "manual" in task:
        _err(errors, f"{where}.manual", "only `manual: true` is meaningful; leave it out for platform tasks")
    try:
        validate_spec({k: task[k] for k in ("platform_id", "settings") if k in task}, submitter.registry)
    except ValidationError as exc:
        for path, messages in exc.details.items():
            errors.setdefault(f"{where}.{path}", []).extend(messages)


def note_of(body: dict[str, Any]) -> str | None:
    """The caller's note in an ack or rerun body: `note`, or `by`, which older clients sent as who acted."""
    notes = [body[k] for k in ("note", "by") if body.get(k) is not None]
    if any(not isinstance(n, str) or len(n) > NOTE_MAX_CHARS for n in notes):
        raise ValidationError(f"a note is text of at most {NOTE_MAX_CHARS} characters",
                              details={"note": [f"a string of at most {NOTE_MAX_CHARS} characters"]})
    if len(notes) == 2 and notes[0] != notes[1]:
        raise ValidationError('"by" is an older name of "note"; give one of them',
                              details={"by": ["give note or by, not both"]})
    return notes[0] if notes else None


def definition_version(body: dict[str, Any]) -> str:
    if "version" in body:
        return str(body["version"])
    canonical = json.dumps(body["steps"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


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
    """Creates processes, records acknowledgements and reruns, and advances them as their jobs end."""

    def __init__(self, submitter: Submitter) -> None:
        self.submitter = submitter
        self.connection = submitter.connection
        self.keys = submitter.store.keys

    # -- requests --------------------------------------------------------------------------------------
    def run(self, body: Any, *, admit: Callable[[], None] | None = None) -> dict[str, Any]:
        """Start a process; `admit` is called once the definition is valid, before anything is written."""
        validate_definition(body, self.submitter)
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
            pipe.execute()
        view = self.advance(process_id)
        view["replaced"] = replaced
        return view

    def get(self, process_id: str) -> dict[str, Any]:
        return self.advance(process_id)

    def ack(self, process_id: str, task_name: str, body: Any, *, by: str) -> dict[str, Any]:
        """Record `body`'s verdict on a task. `by` is who signs off (the API token's name); the body's own `by`,
        which older clients sent, is only a note, like `note`."""
        if not isinstance(body, dict) or not isinstance(body.get("result"), str) or body["result"] not in VERDICTS:
            raise ValidationError(
                'send {"result": "OK" or "FAIL", "reason": why, "note": anything else to keep}',
                details={"result": ['must be "OK" or "FAIL"']},
            )
        unknown = sorted(set(body) - {"result", "reason", "note", "by"})
        if unknown:
            details = {k: ["Unknown field."] for k in unknown}
            raise ValidationError("unknown fields in the acknowledgement", details=details)
        reason, note = body.get("reason"), note_of(body)
        if body["result"] == "FAIL" and not (isinstance(reason, str) and reason):
            raise ValidationError("a FAIL needs a reason", details={"reason": ["required with FAIL"]})
        if reason is not None and not isinstance(reason, str):
            raise ValidationError("the reason is text", details={"reason": ["Not a valid string."]})

        def change(doc: dict[str, Any]) -> None:
            step, task = self._find_open_task(doc, task_name)
            if task["kind"] == "manual":
                if task["status"] not in ("waiting", "fail"):
                    raise ConflictError(f"task {task_name!r} is {task['status']}; only a waiting task takes an ack")
                task["status"] = "ok" if body["result"] == "OK" else "fail"
            elif not (task["status"] == "fail" and body["result"] == "FAIL"):
                raise ConflictError(
                    f"platform task {task_name!r} is {task['status']}; its job decides OK. Ack FAIL on a failed "
                    "platform task to give it up, which fails its step and the process."
                )
            else:
                task["given_up"] = True
            task.update(acked_by=by, reason=reason, acked_at=iso(), **({"note": note} if note else {}))
            doc["history"].append({"at": iso(), "event": "ack", "step": step["name"], "task": task_name,
                                   "result": body["result"], "by": by, "reason": reason,
                                   **({"note": note} if note else {})})

        self._update(process_id, change)
        return self.advance(process_id)

    def rerun(self, process_id: str, task_name: str, *, by: str, note: str | None = None) -> dict[str, Any]:
        """Run a failed task again; `by` is who asked (the API token's name), `note` the caller's own words."""
        def change(doc: dict[str, Any]) -> None:
            step, task = self._find_open_task(doc, task_name)
            if task["status"] != "fail":
                raise ConflictError(f"task {task_name!r} is {task['status']}; only a failed task can be re-run")
            task.update(status="pending", attempt=task["attempt"] + 1, result=None, error=None, given_up=False)
            doc["history"].append({"at": iso(), "event": "rerun", "step": step["name"], "task": task_name,
                                   "by": by, **({"note": note} if note else {})})

        self._update(process_id, change)
        return self.advance(process_id)

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
                self._collect(step)
                for task in step["tasks"]:
                    if task["status"] == "pending":
                        if task["kind"] == "manual":
                            task["status"] = "waiting"
                        else:
                            task["job_id"] = f"{doc['id']}-{task['key']}-{task['attempt']}"
                            task["status"] = "running"
                            to_submit.append((task["job_id"], task, {"process_id": doc["id"]}))
                if not self._finalize(doc, step):
                    break

        doc = self._update(process_id, change)
        for job_id, task, extra in to_submit:
            spec = {"platform_id": task["platform_id"], "settings": task["settings"]}
            if task.get("secrets"):
                sealer = self.submitter.sealer
                assert sealer is not None
                spec["settings"] = merge_secrets(task["settings"], sealer.unseal(task["secrets"]))
            self.submitter.submit(spec, job_id=job_id, extra=extra)
        return self._view(doc)

    def _collect(self, step: dict[str, Any]) -> None:
        running = [t for t in step["tasks"] if t["status"] == "running"]
        if not running:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            for task in running:
                pipe.hmget(self.submitter.store.keys.job(task["job_id"]), ["status", "result", "error"])
            answers = pipe.execute()
        for task, (status, result, error) in zip(running, answers, strict=True):
            if status is None:  # the submit never landed (Redis went away in between): submit again
                task["status"] = "pending"
                continue
            verdict = JOB_ENDED.get(status.decode()) if status else None
            if verdict:
                task["status"] = verdict
                task["result"] = json.loads(result) if result else None
                task["error"] = json.loads(error) if error else None

    def _finalize(self, doc: dict[str, Any], step: dict[str, Any]) -> bool:
        """Freeze a step that passed (True: go on) or that was given up (process failed)."""
        statuses = [t["status"] for t in step["tasks"]]
        now = iso()
        if all(s == "ok" for s in statuses):
            step.update(status="passed", finalized_at=now)
            doc["history"].append({"at": now, "event": "step_passed", "step": step["name"]})
            if doc["current_step"] + 1 == len(doc["steps"]):
                self._end(doc, "passed")
                return False
            doc["current_step"] += 1
            return True
        if any(t.get("given_up") for t in step["tasks"]):
            step.update(status="failed", finalized_at=now)
            doc["history"].append({"at": now, "event": "step_failed", "step": step["name"]})
            self._end(doc, "failed")
        elif "fail" in statuses and not any(s in ("pending", "running") for s in statuses):
            step["status"] = "blocked"  # a failed task waits: re-run it, or ack FAIL to give it up
        return False

    def _end(self, doc: dict[str, Any], status: str) -> None:
        doc.update(status=status, ended_at=iso())
        doc["history"].append({"at": doc["ended_at"], "event": f"process_{status}"})

    # -- storage ---------------------------------------------------------------------------------------
    def _new_task(self, task: dict[str, Any], *, key: str) -> dict[str, Any]:
        base = {"name": task["name"], "key": key, "status": "pending", "attempt": 1, "job_id": None, "result": None,
                "error": None}
        if task.get("manual"):
            return {**base, "kind": "manual", "prompt": task.get("prompt", "")}
        spec = validate_spec({"platform_id": task["platform_id"], "settings": task.get("settings", {})},
                             self.submitter.registry)
        masked, secrets = split_secrets(spec)
        sealed = None
        if secrets:
            if self.submitter.sealer is None:
                raise ValidationError("the process has secrets but the service has no COLLECTOR_SECRET_KEY")
            sealed = self.submitter.sealer.seal(secrets)
        return {**base, "kind": "platform", "platform_id": spec.platform.id, "settings": masked, "secrets": sealed}

    def _find_open_task(self, doc: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if doc["status"] != "running":
            raise ConflictError(f"process {doc['id']} is {doc['status']}; it takes no more acks or reruns")
        self._collect(doc["steps"][doc["current_step"]])  # judge the task by its job's latest state
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
        return view


