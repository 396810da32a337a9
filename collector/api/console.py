"""`/ui/`: the console, collector's own pages to submit, follow, resume and sign off work (server-rendered)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, flash, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from collector.api import pages
from collector.api.auth import caller, is_loopback
from collector.api.forms import field_errors, form_fields, resume_input, spec_from_form
from collector.api.requests import list_query
from collector.api.services import services
from collector.api.sessions import csrf_token, csrf_valid, sign_in, sign_out
from collector.api.tokens import identify
from collector.errors import BadRequestError, CollectorError, ValidationError
from collector.store.records import JOB_ID

blueprint = Blueprint("console", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")


@blueprint.context_processor
def page_context() -> dict[str, Any]:
    open_mode = not current_app.extensions["collector.auth"]["tokens"]
    return {"open_mode": open_mode, "loopback": is_loopback(request.host.rsplit(":", 1)[0].strip("[]")),
            "caller": caller(), "allowed": pages.allowed, "scopes": pages.scopes(), "csrf_token": csrf_token}


@blueprint.errorhandler(CollectorError)
def failed(exc: CollectorError) -> ResponseReturnValue:
    return render_template("console/error.html", error=exc), exc.status


@blueprint.after_request
def as_page(response: Response) -> Response:
    """A refusal the access checks answered in JSON (a missing scope or CSRF token) shown as a page, for a person."""
    if response.status_code < 400 or not response.is_json:
        return response
    body = response.get_json(silent=True) or {}
    error = CollectorError(str(body.get("message", "")), details=body.get("details") or {})
    error.status, error.code = response.status_code, str(body.get("error", "error"))
    page = make_response(render_template("console/error.html", error=error), response.status_code)
    for name in ("WWW-Authenticate", "Retry-After"):
        for value in response.headers.getlist(name):
            page.headers.add(name, value)
    return page


def _checked(value: str, what: str = "job") -> str:
    if not JOB_ID.fullmatch(value):
        raise BadRequestError(f"{value[:80]!r} is not a {what} id")
    return value


def _done(message: str, endpoint: str, **values: str) -> ResponseReturnValue:
    flash(message)
    return redirect(url_for(endpoint, **values), 303)


@blueprint.after_request
def not_kept(response: Response) -> Response:
    """A console page shows job data to a signed-in person: no cache (a shared browser's, a proxy's) keeps it."""
    if request.endpoint != "console.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    tokens = current_app.extensions["collector.tokens"]
    target = request.args.get("next", "")
    kept = target.startswith("/ui/") and not target.startswith("/ui//") and target.isprintable() and "\\" not in target
    target = target if kept else url_for("console.jobs")  # a page of the console, nothing a header could split on
    if not tokens:
        return redirect(target)
    if request.method == "GET":
        return render_template("console/login.html", next=target)
    token = identify(request.form.get("token", ""), tokens) if csrf_valid() else None
    if token is None:
        return render_template("console/login.html", next=target, refused=True), 401
    sign_in(token)
    return redirect(target, 303)


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    sign_out()
    return redirect(url_for("console.login"), 303)


@blueprint.get("/")
def home() -> ResponseReturnValue:
    return redirect(url_for("console.jobs"))


@blueprint.get("/jobs")
def jobs() -> ResponseReturnValue:
    return render_template("console/jobs.html", **pages.jobs_page(services(), list_query()))


@blueprint.get("/jobs/<job_id>")
def job(job_id: str) -> ResponseReturnValue:
    offset = request.args.get("offset", "0")
    page = pages.job_page(services(), _checked(job_id), offset=int(offset) if offset.isdigit() else 0)
    return render_template("console/job.html", **page)


@blueprint.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    answer = services().cancel(_checked(job_id), by=caller(), reason=request.form.get("reason") or None)
    return _done(f"job {job_id} {answer['status']}", "console.job", job_id=job_id)


@blueprint.post("/jobs/<job_id>/retry")
def retry(job_id: str) -> ResponseReturnValue:
    services().retry(_checked(job_id), by=caller())
    return _done(f"job {job_id} queued again from its last checkpoint", "console.job", job_id=job_id)


@blueprint.post("/jobs/<job_id>/resume")
def resume(job_id: str) -> ResponseReturnValue:
    svc = services()
    waiting = svc.view(_checked(job_id), full=False).get("waiting") or {}
    # A job that no longer waits answers 409 whatever the token: a placeholder lets resume() say so.
    body = {"token": waiting.get("resume_token") or "-", "input": resume_input(waiting, request.form)}
    answer = svc.resume(job_id, body, by=caller())
    return _done(f"job {job_id} received {answer['resumed']!r} and is queued again", "console.job", job_id=job_id)


@blueprint.get("/submit")
def submit_form() -> ResponseReturnValue:
    return _submit_page(request.args.get("platform_id", ""), given={}, errors={}, status=200)


@blueprint.post("/submit")
def submit() -> ResponseReturnValue:
    svc = services()
    platform_id = request.form.get("platform_id", "")
    platform = svc.registry.platforms.get(platform_id)
    if platform is None:
        return _submit_page(platform_id, given=request.form, errors={"platform_id": "choose a platform"}, status=422)
    described = platform.describe()
    try:
        answer = svc.submit(spec_from_form(described, request.form), by=caller())
    except ValidationError as exc:
        errors = field_errors(exc.details, [s["name"] for s in described["settings"]])
        return _submit_page(platform_id, given=request.form, errors=errors, status=422, message=exc.message)
    return _done(f"job {answer['job_id']} queued", "console.job", job_id=answer["job_id"])


def _submit_page(platform_id: str, *, given: Any, errors: dict[str, str], status: int,
                 message: str = "") -> ResponseReturnValue:
    svc = services()
    page = pages.submit_page(svc)
    chosen = next((p for p in page["platforms"] if p["id"] == platform_id), None)
    fields = form_fields(chosen, svc.reach.describe_connections(), given=given) if chosen else []
    return render_template("console/submit.html", **page, chosen=chosen, fields=fields, errors=errors,
                           message=message, client_id=given.get("_id", "")), status


@blueprint.get("/inbox")
def inbox() -> ResponseReturnValue:
    return render_template("console/inbox.html", **pages.inbox_page(services()))


@blueprint.get("/processes")
def processes() -> ResponseReturnValue:
    query = {"cursor": pages.cursor_of(request.args.get("cursor")), "name": request.args.get("name") or None,
             "status": request.args.get("status") or None}
    return render_template("console/processes.html", **pages.processes_page(services(), query))


@blueprint.get("/processes/<process_id>")
def process(process_id: str) -> ResponseReturnValue:
    return render_template("console/process.html", **pages.process_page(services(), _checked(process_id, "process")))


def _verdict() -> dict[str, Any]:
    form = request.form
    return {"result": form.get("result", ""), **{k: form[k] for k in ("reason", "note") if form.get(k)}}


@blueprint.post("/processes/<process_id>/ack")
def ack(process_id: str) -> ResponseReturnValue:
    task = request.form.get("task", "")
    services().processes.ack(_checked(process_id, "process"), task, _verdict(), by=caller())
    return _done(f"task {task!r} signed off {request.form.get('result')}", "console.process", process_id=process_id)


@blueprint.post("/processes/<process_id>/rerun")
def rerun(process_id: str) -> ResponseReturnValue:
    task = request.form.get("task", "")
    services().processes.rerun(_checked(process_id, "process"), task, by=caller(),
                               note=request.form.get("note") or None)
    return _done(f"task {task!r} runs again", "console.process", process_id=process_id)


@blueprint.post("/processes/<process_id>/finalize")
def finalize(process_id: str) -> ResponseReturnValue:
    step = request.form.get("step", "")
    services().processes.finalize(_checked(process_id, "process"), step, _verdict(), by=caller())
    return _done(f"step {step!r} finalized {request.form.get('result')}", "console.process", process_id=process_id)


@blueprint.get("/schedules")
def schedules() -> ResponseReturnValue:
    return render_template("console/schedules.html", **pages.schedules_page(services()))


@blueprint.post("/schedules/<schedule_id>/pause")
def schedule_pause(schedule_id: str) -> ResponseReturnValue:
    services().schedules.pause(_checked(schedule_id, "schedule"))
    return _done(f"schedule {schedule_id} paused", "console.schedules")


@blueprint.post("/schedules/<schedule_id>/resume")
def schedule_resume(schedule_id: str) -> ResponseReturnValue:
    services().schedules.resume(_checked(schedule_id, "schedule"))
    return _done(f"schedule {schedule_id} resumed", "console.schedules")


@blueprint.post("/schedules/<schedule_id>/delete")
def schedule_delete(schedule_id: str) -> ResponseReturnValue:
    services().schedules.delete(_checked(schedule_id, "schedule"))
    return _done(f"schedule {schedule_id} deleted", "console.schedules")

