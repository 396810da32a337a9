"""Where a local command's job spec comes from: a JSON file, a job of a running service, `--set` overrides."""

from __future__ import annotations

import copy
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from collector.errors import SpecSourceError
from collector.masking import MASK
from collector.specs.job import JobSpec
from collector.specs.secrets import secret_paths

FETCH_TIMEOUT_S = 10


def read_spec_file(path: str) -> dict[str, Any]:
    """A job spec from a JSON file (`-` reads stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecSourceError(
            f"cannot read the job spec {path!r}: {exc.strerror}; give the path of a JSON file"
        ) from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise SpecSourceError(
            f"{path} is not valid JSON ({exc}); write it as "
            '{"platform_id": "demo", "settings": {"rows": 10}}'
        ) from None
    if not isinstance(body, dict):
        raise SpecSourceError(f"{path} holds a JSON {type(body).__name__}; a job spec is a JSON object")
    return body


def fetch_job_spec(job_id: str, *, url: str, token: str | None = None) -> dict[str, Any]:
    """The spec of job `job_id` (platform and settings) from a running service. The service never gives out
    secrets: they come back as "***" and must be supplied again (see `missing_secrets`)."""
    query = urllib.parse.urlencode({"job_id": job_id})
    address = f"{url.rstrip('/')}/execution/get?{query}"
    request = urllib.request.Request(address, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
            record = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message", "")
        except ValueError:
            message = exc.reason
        raise SpecSourceError(f"the service at {url} answered {exc.code} for job {job_id!r}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SpecSourceError(
            f"cannot reach the service at {url} ({reason}); start it or give its address with --url"
        ) from None
    except ValueError:
        raise SpecSourceError(f"{address} did not answer JSON; is --url the collector API?") from None
    body: dict[str, Any] = {"platform_id": record.get("platform_id"), "settings": record.get("settings") or {}}
    if record.get("client_id") is not None:
        body["_id"] = record["client_id"]
    return body


def parse_value(text: str) -> Any:
    """A `--set` value: JSON when it parses (`10`, `true`, `[1, 2]`, `{"a": 1}`), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_sets(body: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """`body` with each `name=value` (or `storage.settings.password=value`) set in its settings."""
    body = copy.deepcopy(body)
    settings = body.setdefault("settings", {})
    if not isinstance(settings, dict):
        raise SpecSourceError("the spec's settings are not a JSON object; --set needs an object to set names in")
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or not name.strip():
            raise SpecSourceError(f"--set {assignment!r} is not NAME=VALUE; write e.g. --set rows=10")
        *parents, last = name.strip().split(".")
        target = settings
        for part in parents:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecSourceError(f"--set {name}: {part!r} is not an object in the settings")
            target = child
        target[last] = parse_value(raw)
    return body


def missing_secrets(spec: JobSpec) -> list[str]:
    """Secret settings still masked ("***"), as the `--set` names that would give them."""
    missing = []
    for path in secret_paths(spec):
        value: Any = spec.settings
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value == MASK:
            missing.append(".".join(path))
    return missing
