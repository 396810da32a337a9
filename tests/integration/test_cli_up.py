"""`collector up`: embedded Redis, workers and API in one command; SIGTERM stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from collector.cli.embedded import free_port, server_binary
from collector.errors import ConfigError
from tests.conftest import service_missing, wait_for


def http(method: str, url: str, body: object = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


def test_up_runs_everything_and_sigterm_stops_it_all(tmp_path: Path) -> None:
    try:
        server_binary()
    except ConfigError as exc:
        service_missing(exc.message)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    log = open(tmp_path / "up.log", "wb")
    # Run where a user would, away from the code: the default data root is ./data of that folder.
    proc = subprocess.Popen([sys.executable, "-m", "collector", "up", "--port", str(port), "--workers", "2"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return http("POST", f"{base}/system/alive")["workers"]["count"] == 2
            except OSError:
                return False

        wait_for(up, timeout_s=30, interval_s=0.1, what="collector up to serve with 2 workers")
        output = (tmp_path / "up.log").read_text()
        assert f"{base}/rq" in output and f"{base}/system/alive" in output and f"{base}/docs" in output
        assert "open: no COLLECTOR_API_TOKENS, but 127.0.0.1 is loopback" in output
        assert (tmp_path / "data").is_dir()
        job = http("POST", f"{base}/execution/run", {"_id": "t1", "platform_id": "demo", "settings": {"rows": 50}})
        wait_for(lambda: http("GET", f"{base}/execution/get?job_id={job['job_id']}")["status"] == "finished",
                 what="the demo job to finish")
        rebound = urllib.request.Request(f"{base}/execution/list", headers={"Host": f"rebind.example:{port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=5)
        assert refused.value.code == 403, "open on loopback: a name pointed here by a web page is refused"
        refused.value.close()
        redis_port = int(http("POST", f"{base}/system/alive")["redis"]["url"].rsplit(":", 1)[1].split("/")[0])
        started = descendants(proc.pid)
        assert len(started) >= 4, "redis-server, the pool and its two workers"
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log.close()
    for pid in started:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], pid
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis_port), timeout=1):
        pass


def session_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


@pytest.mark.parametrize(("grace", "rows", "end"), [("120", 12, "finished"), ("2", 400, "requeued")],
                         ids=["finishes-within-the-grace", "requeued-after-the-grace"])
def test_ctrl_c_in_a_terminal_stops_workers_within_the_grace_then_redis(
    tmp_path: Path, grace: str, rows: int, end: str
) -> None:
    """A terminal's Ctrl-C is a SIGINT to every process of the foreground group: `up` started as a terminal
    would (a group of its own), a slow job running, SIGINT to the whole group. The job finishes, or is requeued
    once the grace is over, while Redis still runs; then everything stops, quietly, and `up` exits 0."""
    try:
        server_binary()
    except ConfigError as exc:
        service_missing(exc.message)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(COLLECTOR_LOG_FORMAT="json", COLLECTOR_SHUTDOWN_GRACE_S=grace)
    log_path = tmp_path / "up.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "collector", "up", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return http("POST", f"{base}/system/alive")["workers"]["count"] == 1
            except OSError:
                return False

        wait_for(up, timeout_s=60, interval_s=0.2, what="collector up to serve with 1 worker")
        redis_port = int(http("POST", f"{base}/system/alive")["redis"]["url"].rsplit(":", 1)[1].split("/")[0])
        job = http("POST", f"{base}/execution/run",
                   {"platform_id": "demo", "settings": {"rows": rows, "delay_s": 0.5}})["job_id"]

        def running() -> bool:
            view = http("GET", f"{base}/execution/get?job_id={job}")
            return view["status"] == "started" and (view.get("progress") or {}).get("done", 0) >= 1

        wait_for(running, timeout_s=60, interval_s=0.1, what="the slow job to be running")
        started = descendants(proc.pid)
        redis_pids = [pid for pid in started if b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
                      or b"valkey-server" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert redis_pids, "the embedded Redis runs as a child of `up`"
        assert all(session_of(pid) != session_of(proc.pid) for pid in redis_pids), \
            "the embedded Redis is out of the terminal's session, so its Ctrl-C does not reach it"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    code = proc.wait(150)
    log.close()
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    ends = [line for line in lines if line.get("job_id") == job and line.get("event") in ("finished", "failed")]
    problems = [line["message"] for line in lines if line.get("level") in ("WARNING", "ERROR", "CRITICAL")]
    if end == "finished":
        assert [line["event"] for line in ends] == ["finished"], output[-3000:]
        assert problems == [], problems
    else:
        assert ends == [], output[-3000:]
        requeued = [line for line in lines if line.get("job_id") == job and line.get("event") == "queued"]
        assert requeued and "requeued" in requeued[0]["message"], output[-3000:]  # one line says what became of it
        assert all("COLLECTOR_SHUTDOWN_GRACE_S" in message or "after the grace period" in message
                   for message in problems), problems
        assert not any(line.get("level") == "ERROR" for line in lines), problems
    assert "progress not written" not in output and "cold shut down" not in output
    for pid in started:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], pid
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis_port), timeout=1):
        pass
