"""A page on another site, opened in a real (headless) browser, tries to cancel a job through the open API."""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from collector.app import create_app
from collector.config import Config
from tests.conftest import ServedApp, wait_for

ATTACK = """<!DOCTYPE html>
<html><body>
<iframe name="sink"></iframe>
<form id="bare" method="post" target="sink" action="{api}/execution/cancel?job_id={job_id}"></form>
<script>
  // A "simple" request the browser sends without asking the API first: a text/plain body, no custom header.
  fetch("{api}/execution/cancel?job_id={job_id}", {{method: "POST", mode: "no-cors", body: '{{"reason": "x"}}',
                                                   headers: {{"Content-Type": "text/plain"}}}})
    .finally(() => document.getElementById("bare").submit());  // then a form with no fields, as on main
</script>
</body></html>
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class Recorder:
    """WSGI middleware that keeps the status of every POST the app answers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.answers: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def recording(status: str, headers: Any, *args: Any) -> Any:
            if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/execution/cancel":
                self.answers.append(status.split()[0])
            return start_response(status, headers, *args)

        return self.app(environ, recording)


@pytest.fixture
def api(config: Config) -> Iterator[tuple[ServedApp, Recorder]]:
    recorder = Recorder(create_app(config))
    served = ServedApp(recorder)
    yield served, recorder
    served.close()


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain web server on another port of this machine: another origin, as another site's page would be."""
    root = tmp_path / "site"
    root.mkdir()
    server = HTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", root
    server.shutdown()
    server.server_close()


def test_a_page_on_another_site_cannot_cancel_a_job(api: tuple[ServedApp, Recorder], other_site: tuple[str, Path],
                                                    tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on PATH to open the attacking page with")
    served, recorder = api
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}})
    assert status == 202
    job_id = body["job_id"]  # no worker runs: it stays queued unless someone cancels it
    site, root = other_site
    (root / "attack.html").write_text(ATTACK.format(api=served.url, job_id=job_id))
    chromium = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", f"{site}/attack.html"],  # stays while the page posts
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(recorder.answers) == 2, timeout_s=60, what="the page's two posts to reach the API")
    finally:
        chromium.kill()
        chromium.wait()
    status, view = served.request("GET", f"/execution/get?job_id={job_id}")
    assert status == 200 and view["status"] == "queued" and "canceled_by" not in view, view
    assert recorder.answers == ["403", "403"]  # both came from a page of another origin
