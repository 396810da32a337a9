"""Platforms with secrets, written into a throw-away package for tests (none of them ships)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import storage
from collector.specs.schema import storage_backends
from collector.types import Secret

LEAKY = '''
"""A platform that tries to leak its secrets everywhere: logs, exceptions, URLs, auth headers, results."""
import logging
from typing import Literal

from collector.platform import FatalError, Platform, Secret

raw_log = logging.getLogger("leaky.raw")


class Leaky(Platform):
    """Puts its password and token in every channel it has, then succeeds or fails as told."""

    def __init__(self, password: Secret, token: Secret, outcome: Literal["succeed", "fail", "crash"] = "succeed",
                 user: str = "svc") -> None:
        self.password, self.token, self.outcome, self.user = password, token, outcome, user

    def _run(self, ctx):
        url = f"postgresql://{self.user}:{self.password}@db.invalid:5432/app"
        ctx.log.info("connecting to %s with password %s", url, self.password)
        ctx.log.warning(f"token is {self.token}")
        raw_log.warning("raw logger: password=%s token=%s url=%s", self.password, self.token, url)
        ctx.progress(1, 2, "half way")
        if self.outcome == "fail":
            try:
                raise ConnectionError(f"could not connect to {url}")
            except ConnectionError as exc:
                raw_log.exception("request failed with Authorization: Bearer %s", self.token)
                raise FatalError(
                    f"GET https://api.invalid/x failed; headers={{'Authorization': 'Bearer {self.token}'}} "
                    f"password={self.password}"
                ) from exc
        if self.outcome == "crash":
            raise ValueError(f"{self.password!s} {self.token!s}")
        return {"echo": f"used {self.password} and {self.token}", "rows": 1}
'''

VAULTED = '''
"""Reads from a vault: a secret of its own and a storage target whose backend has a secret."""
import hashlib

from collector.platform import Platform, Secret, Storage


class Vaulted(Platform):
    """Checks that it got its real api_key (`expect` is its SHA-256), writes one row."""

    def __init__(self, api_key: Secret, storage: Storage | None = None, expect: str = "") -> None:
        self.api_key, self.storage, self.expect = api_key, storage, expect

    def _run(self, ctx):
        if hashlib.sha256(self.api_key.encode()).hexdigest() != self.expect:
            raise ValueError("the api_key was not unsealed")
        if self.storage is not None:
            self.storage.write([{"key_length": len(self.api_key)}])
        return {"stored": self.storage.rows_written if self.storage else 0}
'''

ECHOING = '''
"""A source that echoes its credentials into every channel that keeps data, as a careless API would."""
import hashlib
import json
import logging

from collector.platform import Platform, Secret, TransientError

raw_log = logging.getLogger("echoing.raw")


class Echoing(Platform):
    """Signs in with `api_key` and `headers`, gets a session token it registers as a secret, and puts all of them
    in its datasets (values, keys, nested, inside JSON text), checkpoint, progress, log lines and result; its
    first attempt fails with a transient error quoting them when `fail_first` is set."""

    def __init__(self, api_key: Secret, headers: dict[str, Secret] | None = None, fail_first: bool = False,
                 pin: Secret | None = None) -> None:
        self.api_key, self.headers, self.fail_first, self.pin = api_key, headers or {}, fail_first, pin

    def _run(self, ctx):
        session = "sess-" + hashlib.sha256(self.api_key.encode()).hexdigest()[:20]
        given = [self.api_key, *self.headers.values(), session]
        body = {"auth": f"Bearer {self.api_key}", "headers": dict(self.headers), "session": session,
                "nested": [{"deep": {value: [value, f"<{value}>"] for value in given}}],
                "as_text": json.dumps({"sent": given}), "pin": self.pin, "count": 2024}
        ctx.dataset("original", [body])       # before the session is registered: masked when it is
        ctx.add_secrets([session])
        ctx.checkpoint({"cursor": f"after {session}", "key": self.api_key})
        ctx.progress(1, 2, f"signed in with {self.api_key}")
        ctx.log.info("session %s for key %s", session, self.api_key)
        raw_log.warning("raw logger: %s", session)
        if self.fail_first and ctx.attempt == 1:
            raise TransientError(f"the API answered 503: {json.dumps(body)}")
        ctx.dataset("processed", [{"key": self.api_key, session: "a key", "n": n} for n in range(3)])
        return {"echo": body, session: "a key"}
'''


def make_package(root: Path, name: str, **files: str) -> str:
    """A package `name` under `root` holding `files` (module name → source); returns its name."""
    package = root / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Test platforms."""\n')
    for module, source in files.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))
    return name


class VaultStorage(storage.Storage):
    """A test backend with a secret setting; refuses a password of 'bad' quoting its URL and password."""

    TYPE = "vault"
    written: list[Any] = []

    def __init__(self, url: str, password: Secret, table: str = "rows") -> None:
        if password.startswith("bad"):
            raise ValueError(f"cannot log in to {url} as {password}")
        self.url, self.password, self.table = url, password, table

    def write(self, rows: Any) -> int:
        if self.table == "boom":
            raise ConnectionError(f"writing to vault://admin:{self.password}@{self.url} failed ({self.password})")
        rows = list(rows)
        VaultStorage.written.append((self.password, rows))
        self._written(len(rows))
        return len(rows)


def install_vault(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Make `VaultStorage` the only storage backend for the length of a test."""
    monkeypatch.setattr(storage, "backends", lambda: {"vault": VaultStorage})
    storage_backends.cache_clear()
    request.addfinalizer(storage_backends.cache_clear)  # runs after monkeypatch restored `backends`
    VaultStorage.written = []
