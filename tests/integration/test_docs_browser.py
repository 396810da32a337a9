"""/docs renders the API in a real (headless) browser with every outside host unreachable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import ServedApp, service_missing


def test_swagger_ui_renders_the_document_offline(served: ServedApp, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        service_missing("no chromium on PATH to render /docs with (apt-get install chromium)")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing but this app resolves
         "--virtual-time-budget=10000", "--dump-dom", served.url + "/docs"],
        capture_output=True, text=True, timeout=90,
    )
    dom = done.stdout
    assert "OAS 3.1" in dom, dom[-2000:] or done.stderr[-2000:]
    for path in ("/system/alive", "/platforms/get", "/execution/run", "/execution/get", "/openapi.json"):
        assert f'data-path="{path}"' in dom, path
