"""The console in a real browser (Playwright driving the system's chromium) with real workers: a job submitted through
the form and its progress bar moving, a waiting job resumed through its form, a manual task signed off, and the
refusals: a form posted from another site, a page opened without a session when tokens are set.

Set CONSOLE_SCREENSHOTS to a folder to keep screenshots of the job page and the inbox (the README's are made so)."""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from collector.app import create_app
from collector.config import Config
from tests.conftest import ROOT, PoolProcess, ServedApp, service_missing, wait_for

CHROMIUM = "/usr/bin/chromium"
PACKAGE = "consoleplatforms"
SIGNIN = '''
"""Waits for the code an identity provider hands back, then says how long it was."""
from collector.platform import Platform


class Signin(Platform):
    """Asks a person for a code."""

    def __init__(self, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s

    def _run(self, ctx):
        answer = ctx.wait_for("signin", prompt="paste the code from the sign-in page", timeout_s=self.timeout_s,
                              expects={"code": "the code the identity provider showed"})
        return {"code_chars": len(answer["code"])}
'''
OPS = "ops-token-for-the-console-0123456789"
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        service_missing(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    yield context.new_page()
    context.close()


@pytest.fixture
def kit(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    target = tmp_path / PACKAGE
    shutil.copytree(ROOT / "platforms", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "signin.py").write_text(textwrap.dedent(SIGNIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return dataclasses.replace(config, platforms_package=PACKAGE)


@pytest.fixture
def console(kit: Config) -> Iterator[ServedApp]:
    served = ServedApp(create_app(kit))
    yield served
    served.close()


@pytest.fixture
def pool(kit: Config, tmp_path: Path, start_pool: Callable[..., PoolProcess]) -> PoolProcess:
    return start_pool(1, kit, PYTHONPATH=str(tmp_path))


def job_status(served: ServedApp, job_id: str) -> str:
    return served.request("GET", f"/execution/get?job_id={job_id}")[1]["status"]


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=False)


def test_a_job_submitted_through_the_form_shows_its_progress_bar_moving(console: ServedApp, pool: PoolProcess,
                                                                        page: Any) -> None:
    page.goto(console.url + "/ui/submit?platform_id=demo")
    page.fill("#f-rows", "40")
    page.fill("#f-delay_s", "0.1")
    page.fill("#f-_id", "from-the-form")
    page.click("#submit")
    page.wait_for_url("**/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]

    def bar() -> float:
        return float(page.get_attribute("#progress", "value") or 0)

    first = wait_for(lambda: 0 < bar() < 100 and bar(), timeout_s=30, what="the progress bar to start moving")
    wait_for(lambda: bar() > first, timeout_s=30, what="the progress bar to move on without a reload")
    assert "ETA" in page.inner_text("#eta") or bar() == 100
    wait_for(lambda: page.inner_text("#status") == "finished", timeout_s=60, what="the job to finish on the page")
    assert page.get_attribute("#progress", "value") == "100" or float(page.get_attribute("#progress", "value")) == 100
    assert job_status(console, job_id) == "finished"
    assert page.locator("#dataset-processed tbody tr").count() > 0, "the rows show as a table"
    page.goto(console.url + "/ui/jobs")
    row = page.locator(f'tr[data-job="{job_id}"]')
    assert "from-the-form" in row.inner_text() and "finished" in row.inner_text()


def test_the_jobs_list_follows_running_jobs_without_a_reload(console: ServedApp, pool: PoolProcess, page: Any) -> None:
    status, answer = console.request("POST", "/execution/run",
                                     {"platform_id": "demo", "settings": {"rows": 30, "delay_s": 0.1}})
    assert status == 202, answer
    job_id = answer["job_id"]
    page.goto(console.url + "/ui/jobs")
    row = page.locator(f'tr[data-job="{job_id}"]')
    page.evaluate("window.notReloaded = true")

    def bar() -> float:
        return float(row.locator('[data-field="progress"]').get_attribute("value") or 0)

    wait_for(lambda: bar() > 0, timeout_s=30, what="the row's progress bar to move")
    wait_for(lambda: row.locator('[data-field="status"]').inner_text() == "finished", timeout_s=60,
             what="the row's status to turn finished")
    assert page.evaluate("window.notReloaded") is True, "the page updated in place"


def test_a_field_error_shows_next_to_its_field(console: ServedApp, page: Any) -> None:
    page.goto(console.url + "/ui/submit?platform_id=demo")
    page.fill("#f-rows", "-3")
    page.click("#submit")
    page.wait_for_selector("#form-error")
    assert "negative" in page.locator('[data-field="rows"] .field-error').inner_text()
    assert "/ui/submit" in page.url


def test_a_waiting_job_is_resumed_through_its_form(console: ServedApp, pool: PoolProcess, page: Any) -> None:
    status, answer = console.request("POST", "/execution/run", {"platform_id": "signin", "settings": {}})
    assert status == 202, answer
    job_id = answer["job_id"]
    wait_for(lambda: job_status(console, job_id) == "waiting", timeout_s=30, what="the job to wait for input")
    page.goto(console.url + "/ui/inbox")
    item = page.locator('tr[data-kind="input"]', has_text=job_id)
    assert "paste the code" in item.inner_text()
    shot(page, "console-inbox.png")
    item.locator("a.button").click()
    page.wait_for_selector("#resume-form")
    assert page.get_attribute("#in-code", "type") == "password", "a code is typed like a secret"
    shot(page, "console-job.png")
    page.fill("#in-code", "abc-123-xyz")
    page.click("#resume")
    wait_for(lambda: job_status(console, job_id) == "finished", timeout_s=60, what="the resumed job to finish")
    assert console.request("GET", f"/execution/get?job_id={job_id}")[1]["result"] == {"code_chars": 11}
    # The form's redirect lands on the job's page, which reloads itself when the job's status changes, at a moment
    # no test can know: the finished job is looked at in a page of its own.
    ended = page.context.new_page()
    ended.goto(console.url + f"/ui/jobs/{job_id}")
    assert ended.inner_text("#status") == "finished" and "resumed" in ended.inner_text("#events")


def test_a_manual_task_is_signed_off_from_the_inbox(console: ServedApp, page: Any) -> None:
    status, view = console.request("POST", "/process/run", {"name": "go-live", "steps": [
        {"name": "approvals", "tasks": [{"name": "legal", "manual": True, "prompt": "is the contract signed?"}]}]})
    assert status == 201, view
    process_id = view["process_id"]
    page.goto(console.url + "/ui/inbox")
    page.locator('tr[data-kind="sign-off"]', has_text="legal").locator("a.button").click()
    row = page.locator('tr[data-task="legal"]')
    row.locator('input[name="note"]').fill("signed on paper")
    row.locator('button[value="OK"]').click()
    page.wait_for_selector("text=signed off OK")
    doc = console.request("GET", f"/process/get?process_id={process_id}")[1]
    legal = doc["steps"][0]["tasks"][0]
    assert legal["status"] == "ok" and legal["acked_by"] == "anonymous" and legal["note"] == "signed on paper"
    assert doc["status"] == "passed"


class Recorder:
    """WSGI middleware keeping the status of every POST under /ui/ the app answers."""

    def __init__(self, app: Any) -> None:
        self.app, self.answers = app, []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def recording(status: str, headers: Any, *args: Any) -> Any:
            if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"].startswith("/ui/"):
                self.answers.append(status.split()[0])
            return start_response(status, headers, *args)

        return self.app(environ, recording)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain web server on another port: another origin, as another site's page would be."""
    root = tmp_path / "site"
    root.mkdir()
    server = HTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", root
    server.shutdown()
    server.server_close()


def test_a_form_posted_from_another_site_is_refused(kit: Config, other_site: tuple[str, Path], page: Any) -> None:
    recorder = Recorder(create_app(kit))
    served = ServedApp(recorder)
    try:
        job_id = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {}})[1]["job_id"]
        page.goto(served.url + f"/ui/jobs/{job_id}")  # the browser has the console's session cookie
        site, root = other_site
        (root / "attack.html").write_text(
            f'<form id="f" method="post" action="{served.url}/ui/jobs/{job_id}/cancel">'
            '<input name="csrf_token" value="guessed"></form><script>document.getElementById("f").submit()</script>')
        page.goto(site + "/attack.html")
        wait_for(lambda: recorder.answers, timeout_s=15, what="the forged post to reach the console")
        assert recorder.answers == ["403"]
        assert job_status(served, job_id) == "queued", "the job was not canceled"
    finally:
        served.close()


def test_with_tokens_a_page_without_a_session_is_refused_until_signing_in(kit: Config, page: Any) -> None:
    served = ServedApp(create_app(dataclasses.replace(kit, api_tokens=f"ops:operate:{OPS}")))
    try:
        page.goto(served.url + "/ui/jobs")
        assert "/ui/login" in page.url and page.locator("#token").count() == 1
        assert page.request.get(served.url + "/execution/stream?job_id=x").status == 401
        page.fill("#token", "not-the-token-0123456789abcdef")
        page.click("button[type=submit]")
        assert page.locator("#refused").count() == 1
        page.fill("#token", OPS)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/jobs")
        assert "Signed in as ops" in page.inner_text("#who")
        cookie = next(c for c in page.context.cookies() if c["name"] == "collector_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    finally:
        served.close()
