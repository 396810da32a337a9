"""The CLI client against a served API and a real worker pool: submit --wait, get, list, platforms, cancel."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.cli.client import Client
from collector.config import Config
from tests.local_server import LocalServer, json_answer

ROOT = Path(__file__).resolve().parents[2]


def cli(url: str, *args: str, token: str = "", stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "COLLECTOR_URL": url, "COLLECTOR_API_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60, input=stdin)


def test_submit_wait_shows_progress_and_exits_0_when_finished(served: Any, start_pool: Callable[..., Any]) -> None:
    start_pool(2)
    done = cli(served.url, "submit", "examples/demo.json", "--wait")
    assert done.returncode == 0, done.stderr
    assert "finished (demo)" in done.stdout and '"rows": 200' in done.stdout
    assert "%" in done.stderr and "rows" in done.stderr  # the progress line (stderr is not a terminal here)
    job_id = done.stdout.split()[1]

    failed = cli(served.url, "submit", "-", "--wait", "--json",
                 stdin=json.dumps({"platform_id": "demo", "settings": {"rows": 3, "fail_at": 2}}))
    assert failed.returncode == 1
    view = json.loads(failed.stdout)
    assert view["status"] == "failed" and view["error"]["type"] == "FatalError"

    listed = json.loads(cli(served.url, "list", "--json", "--status", "finished").stdout)
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    table = cli(served.url, "list").stdout
    assert table.startswith("JOB ID") and job_id in table and view["job_id"] in table

    got = cli(served.url, "get", job_id, "--full", "--json")
    assert json.loads(got.stdout)["datasets"]["original"][0] == {"n": 1, "value": 1}
    assert re.search(rf"^job_id\s+{job_id}$", cli(served.url, "get", job_id).stdout, re.M)


def test_errors_are_clear_and_exit_non_zero(served: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"platform_id": "demo", "settings": {"rows": "many"}}))
    answer = cli(served.url, "submit", str(bad))
    assert answer.returncode == 2 and "settings.rows" in answer.stderr
    assert "is not JSON" in cli(served.url, "submit", "-", stdin="{nope").stderr
    missing = cli(served.url, "get", "nosuchjob")
    assert missing.returncode == 2 and "no job 'nosuchjob'" in missing.stderr
    unknown = cli(served.url, "cancel", "abc")
    assert unknown.returncode == 2 and "no job 'abc'" in unknown.stderr
    down = cli("http://127.0.0.1:9", "list")
    assert down.returncode == 2 and "cannot reach collector at http://127.0.0.1:9" in down.stderr


def test_platforms_table(served: Any) -> None:
    out = cli(served.url, "platforms").stdout
    assert re.search(r"^demo: ", out, re.M) and "SETTING" in out and "rows" in out
    assert "demo" in {p["id"] for p in json.loads(cli(served.url, "platforms", "--json").stdout)["platforms"]}


def test_the_token_is_sent_as_bearer(config: Config) -> None:
    with LocalServer.serving() as server:
        server.route("/platforms/get", lambda seen, calls: json_answer({"platforms": [], "broken": {}}))
        assert Client(server.base, token="t0ken").platforms() == {"platforms": [], "broken": {}}
        assert cli(server.base, "platforms", token="s3cret").returncode == 0
    sent = [seen.headers.get("authorization") for seen in server.seen("/platforms/get")]
    assert sent == ["Bearer t0ken", "Bearer s3cret"]


def test_the_client_and_from_job_work_with_a_named_token(config: Config) -> None:
    import dataclasses

    from collector.app import create_app
    from tests.conftest import ServedApp

    ci, ops = "ci-secret-0123456789abcdef", "ops-secret-0123456789abcdef"
    served = ServedApp(create_app(dataclasses.replace(config, api_tokens=f"ci:submit:{ci},ops:operate:{ops}")))
    try:
        submitted = cli(served.url, "submit", "-", "--json", token=ci,
                        stdin=json.dumps({"platform_id": "demo", "settings": {"rows": 3}}))
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout)["job_id"]
        assert json.loads(cli(served.url, "get", job_id, "--json", token=ci).stdout)["status"] == "queued"
        refused = cli(served.url, "cancel", job_id, token=ci)
        assert refused.returncode == 2 and "insufficient_scope" in refused.stderr and "'operate'" in refused.stderr
        assert ci not in refused.stderr
        canceled = cli(served.url, "cancel", job_id, "--json", token=ops)  # a POST without a body
        assert canceled.returncode == 0, canceled.stderr
        assert json.loads(canceled.stdout)["canceled_by"] == "ops"
        replayed = cli(served.url, "run", "--from-job", job_id, "--copy", token=ci)
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout) == {"rows": 3}
        assert cli(served.url, "get", job_id, token="not-a-token-0123456789").returncode == 2
    finally:
        served.close()


def on_terminal(url: str, *args: str, stdin: str = "") -> tuple[int, str]:
    """The CLI with its standard output on a pseudo-terminal, as a person runs it: exit code and what it printed."""
    leader, follower = pty.openpty()
    env = {"PATH": "/usr/bin:/bin", "COLLECTOR_URL": url, "COLLECTOR_API_TOKEN": ""}
    with subprocess.Popen([sys.executable, "-m", "collector", *args], stdin=subprocess.PIPE, stdout=follower,
                          stderr=subprocess.PIPE, env=env, cwd=ROOT) as process:
        os.close(follower)
        process.stdin.write(stdin.encode())  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=60)
    os.close(leader)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


def test_submit_prints_the_id_alone_for_scripts_and_a_sentence_on_a_terminal(served: Any) -> None:
    spec = json.dumps({"platform_id": "demo", "settings": {"rows": 2}})
    piped = cli(served.url, "submit", "-", stdin=spec)
    assert piped.returncode == 0 and re.fullmatch(r"[0-9a-f-]{8,}\n", piped.stdout), piped.stdout
    code, shown = on_terminal(served.url, "submit", "-", stdin=spec)
    assert code == 0 and re.fullmatch(r"job [0-9a-f-]{8,} queued\n", shown), shown
    code, quiet = on_terminal(served.url, "submit", "-", "--quiet", stdin=spec)
    assert code == 0 and re.fullmatch(r"[0-9a-f-]{8,}\n", quiet), quiet


def test_json_prints_the_refusal_on_stdout(served: Any) -> None:
    bad = json.dumps({"platform_id": "demo", "settings": {"rows": "x"}})
    refused = cli(served.url, "submit", "-", "--json", stdin=bad)
    assert refused.returncode == 2 and "settings.rows" in refused.stderr
    body = json.loads(refused.stdout)
    assert body["error"] == "validation_error" and "settings.rows" in body["details"]
    missing = cli(served.url, "get", "nosuchjob", "--json")
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"] == "not_found"
    down = cli("http://127.0.0.1:9", "list", "--json")
    assert down.returncode == 2 and "cannot reach collector" in json.loads(down.stdout)["message"]


def test_get_full_indents_the_rows_on_a_terminal(served: Any, start_pool: Callable[..., Any]) -> None:
    start_pool(1)
    done = cli(served.url, "submit", "examples/demo.json", "--wait", "--json")
    job_id = json.loads(done.stdout)["job_id"]
    code, shown = on_terminal(served.url, "get", job_id, "--full")
    indented = r'^datasets\n  \{\n    "original": \[\n      \{\n        "n": 1,$'
    assert code == 0 and re.search(indented, shown, re.M), shown
    piped = cli(served.url, "get", job_id, "--full").stdout
    assert re.search(r'^datasets\s+\{"original": \[\{"n": 1, "value": 1\}', piped, re.M), piped[:300]
