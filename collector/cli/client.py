"""The HTTP client of a running service and the logic of the CLI's client commands (submit, get, list, ...).

Only the standard library (urllib): the client makes a handful of JSON requests, and one less dependency
keeps `collector submit` usable from any machine with the package installed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from collector import defaults
from collector.cli import display
from collector.config import Config
from collector.errors import CollectorError, ServiceError

ENDED = frozenset({"finished", "failed", "stopped", "canceled"})
POLL_S = 0.5  # how often `submit --wait` asks for the job's progress when the service has no event stream
STREAM_READ_S = 40.0  # how long a read of the event stream waits (it sends a keep-alive line every 15 s)


class Client:
    """Calls the HTTP API at `url`, sending `token` (COLLECTOR_API_TOKEN: the secret part of a named token) as a
    Bearer token when set."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None and v is not False})
        # X-Requested-With: a POST without a JSON body (cancel) needs it, to show it is no cross-site form.
        headers = {"Accept": "application/json", "X-Requested-With": "collector-client"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(f"{self.url}{path}{'?' + query if query else ''}", data=data,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return _json(resp.read())
        except urllib.error.HTTPError as exc:
            raise ServiceError(exc.code, _json(exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CollectorError(
                f"cannot reach collector at {self.url} ({reason}); start it (`collector up`) or point "
                "--url / COLLECTOR_URL at it"
            ) from None

    def submit(self, spec: Any) -> dict[str, Any]:
        return self.request("POST", "/execution/run", body=spec)

    def get(self, job_id: str, *, full: bool = False) -> dict[str, Any]:
        """The job's record; with `full`, every kept row of its datasets, read page after page."""
        view = self.request("GET", "/execution/get", params={"job_id": job_id, "full": "1" if full else None})
        page = view.get("datasets_page") if full else None
        while page and page.get("next_offset") is not None:
            more = self.request("GET", "/execution/get", params={
                "job_id": job_id, "full": "1", "offset": page["next_offset"], "limit": page["limit"]})
            for name, rows in (more.get("datasets") or {}).items():
                view["datasets"].setdefault(name, []).extend(rows)
            page = more.get("datasets_page")
        if full and isinstance(view.get("datasets_page"), dict):
            view["datasets_page"].update(next_offset=None, next=None)  # every page was read into this one
        return view

    def list(self, **params: Any) -> dict[str, Any]:
        return self.request("GET", "/execution/list", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        try:
            return self.request("POST", "/execution/cancel", params={"job_id": job_id})
        except ServiceError as exc:
            # A job the service does not know names it in details; a route it does not have does not.
            if exc.status in (404, 405) and not (isinstance(exc.body, dict) and exc.body.get("details")):
                raise CollectorError(
                    f"the service at {self.url} has no POST /execution/cancel (an older version); upgrade it, "
                    "or stop the worker running the job"
                ) from None
            raise

    def platforms(self) -> dict[str, Any]:
        return self.request("GET", "/platforms/get")

    def changes(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """`("status", data)` or `("progress", data)` each time the job's changes, as `GET /execution/stream`
        tells; ends with the stream (the job ended, or its time limit came). `OSError` when there is no stream."""
        headers = {"Accept": "text/event-stream", **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        query = urllib.parse.urlencode({"job_id": job_id})
        req = urllib.request.Request(f"{self.url}/execution/stream?{query}", headers=headers)
        # Quiet streams send a keep-alive line every 15 s: a read waits longer than that before it gives up.
        with urllib.request.urlopen(req, timeout=max(self.timeout_s, STREAM_READ_S)) as resp:
            kind = ""
            for raw in resp:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind in ("status", "progress"):
                    yield kind, json.loads(line.removeprefix("data: "))


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def client_for(args: argparse.Namespace, config: Config) -> Client:
    return Client(args.url or config.url, token=config.api_token)


def emit(args: argparse.Namespace, data: Any, human: str, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write((json.dumps(data, indent=2) if args.json else human) + "\n")


def describe(exc: CollectorError) -> str:
    """What went wrong, for a person: the message; for a 422, every field error under its path."""
    if isinstance(exc, ServiceError) and exc.status == 422 and isinstance(exc.body, dict):
        problems = "\n".join(f"  {path}: {'; '.join(map(str, msgs if isinstance(msgs, list) else [msgs]))}"
                             for path, msgs in exc.details.items())
        return f"{exc.body.get('message')}\n{problems}"
    return exc.message


def emit_error(exc: CollectorError, out: TextIO | None = None) -> None:
    """A refused request for `--json`: the service's error body as it came, else one in the same shape."""
    body = exc.body if isinstance(exc, ServiceError) else None
    if not isinstance(body, dict):
        body = {"error": exc.code, "message": exc.message, "details": exc.details}
    (out or sys.stdout).write(json.dumps(body, indent=2) + "\n")


def read_spec(path: str) -> Any:
    """The job spec in file `path` (`-`: standard input), as JSON."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CollectorError(
            f"cannot read the job spec {path!r}: {exc.strerror}; give the path of a JSON file"
        ) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CollectorError(f"{path} is not JSON ({exc}); see examples/ for job specs that work") from None


def wait(client: Client, job_id: str, *, out: TextIO, quiet: bool = False, poll_s: float = POLL_S) -> dict[str, Any]:
    """Follow the job until it ends, drawing the progress bar on `out` (unless `quiet`); the final view. Progress
    comes from the job's event stream, and the job is read again when its status changes; without a stream (an
    older service), it is read every `poll_s`."""
    bar = None if quiet else display.ProgressBar(out)
    told: set[str] = set()
    follow = _Follower(client, job_id) if isinstance(client, Client) else None
    view = client.get(job_id)
    try:
        while True:
            ended = view.get("status") in ENDED
            waiting = view.get("waiting") or {}
            if waiting.get("kind") == "input" and waiting.get("resume_token") not in told and not quiet:
                told.add(waiting.get("resume_token"))
                out.write(f"\njob {job_id} waits for input {waiting.get('name')!r}: {waiting.get('prompt')}\n"
                          f"  resume: POST /execution/resume?job_id={job_id} with "
                          f'{{"token": "{waiting.get("resume_token")}", "input": {{...}}}}\n')
            if bar:
                bar.update(view, last=ended)
            if ended:
                return view
            change = follow.next_change() if follow is not None else None
            if change is None:
                time.sleep(poll_s)
            if change is not None and change[0] == "progress":
                view = {**view, "progress": change[1].get("progress")}
            else:
                view = client.get(job_id)
    finally:
        if bar:
            bar.close()
        if follow is not None:
            follow.close()


class _Follower:
    """The job's event stream, opened again when it ends at its time limit; gives up for polling on an error."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client, self.job_id = client, job_id
        self.stream: Iterator[tuple[str, dict[str, Any]]] | None = None
        self.broken = False

    def next_change(self) -> tuple[str, dict[str, Any]] | None:
        """Wait for the job's next change (`status` or `progress`, with the stream's data); None when there is no
        stream to wait on (then the caller polls)."""
        for _ in range(2):  # a stream that ended at its time limit is opened once more
            if self.broken:
                return None
            try:
                if self.stream is None:
                    self.stream = self.client.changes(self.job_id)
                return next(self.stream)
            except StopIteration:
                self.stream = None
            except (OSError, ValueError):  # no stream (older service, 503 busy), or it broke: poll instead
                self.broken, self.stream = True, None
        return None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()  # type: ignore[attr-defined]


def cmd_submit(args: argparse.Namespace, config: Config) -> int:
    client = client_for(args, config)
    answer = client.submit(read_spec(args.spec))
    if not args.wait:
        # A script (`id=$(collector submit -)`) wants the id alone; a person the sentence.
        alone = args.quiet or not sys.stdout.isatty()
        emit(args, answer, answer["job_id"] if alone else f"job {answer['job_id']} {answer['status']}")
        return 0
    if not (args.json or args.quiet):
        print(f"job {answer['job_id']} {answer['status']}", file=sys.stderr)
    view = wait(client, answer["job_id"], out=sys.stderr, quiet=args.json or args.quiet)
    emit(args, view, display.summary(view))
    return 0 if view.get("status") == "finished" else 1


def cmd_get(args: argparse.Namespace, config: Config) -> int:
    view = client_for(args, config).get(args.job_id, full=args.full)
    emit(args, view, display.record(view, pretty=args.full and sys.stdout.isatty()))
    return 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    page = client_for(args, config).list(
        status=args.status, platform_id=args.platform, limit=args.limit, cursor=args.cursor
    )
    rows = [
        (j["job_id"], j.get("status"), j.get("platform_id"), _percent(j.get("progress")), j.get("created_at"),
         j.get("client_id") or "")
        for j in page["jobs"]
    ]
    human = display.table(rows, ["JOB ID", "STATUS", "PLATFORM", "PROGRESS", "CREATED", "CLIENT ID"])
    if not rows:
        human = "no jobs" + (" match" if args.status or args.platform else "")
    if page.get("next_cursor"):
        human += f"\nmore: {next_page_command(args, page['next_cursor'])}"
    emit(args, page, human)
    return 0


def next_page_command(args: argparse.Namespace, cursor: str) -> str:
    """The `collector list` that prints the next page: the same filters and page size, from `cursor`."""
    words = ["collector", "list"]
    for flag, value in (("--status", args.status), ("--platform", args.platform)):
        if value:
            words += [flag, shlex.quote(value)]
    if args.limit != defaults.LIST_LIMIT:
        words += ["--limit", str(args.limit)]
    return " ".join([*words, "--cursor", shlex.quote(cursor)])


def _percent(progress: dict[str, Any] | None) -> str:
    if not progress or progress.get("percent") is None:
        return "" if not progress else display.number(progress.get("done"))
    return f"{progress['percent']:.0f}%"


def cmd_cancel(args: argparse.Namespace, config: Config) -> int:
    answer = client_for(args, config).cancel(args.job_id)
    emit(args, answer, f"job {args.job_id}: {answer.get('status', 'cancel requested')}")
    return 0


def cmd_platforms(args: argparse.Namespace, config: Config) -> int:
    data = client_for(args, config).platforms()
    blocks = []
    for platform in data.get("platforms", []):
        rows = [
            (s["name"], s.get("type"), "yes" if s.get("required") else "", json.dumps(s.get("default")) if not
             s.get("required") else "", ", ".join(map(str, s.get("choices") or [])), "yes" if s.get("secret") else "")
            for s in platform.get("settings", [])
        ]
        first_line = (platform.get("description") or "").strip().splitlines()[:1]
        text = f"{platform['id']}: {''.join(first_line)}"
        if rows:
            text += "\n" + _indent(display.table(rows, ["SETTING", "TYPE", "REQUIRED", "DEFAULT", "CHOICES", "SECRET"]))
        blocks.append(text)
    for name, reason in (data.get("broken") or {}).items():
        blocks.append(f"{name}: BROKEN: {reason}")
    named = data.get("connections") or []
    if named:
        blocks.append("connections: " + ", ".join(f"{c['name']} ({c['kind']})" for c in named))
    emit(args, data, "\n\n".join(blocks) or "no platforms")
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
