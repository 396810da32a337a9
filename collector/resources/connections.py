"""Connections the operator names in a TOML file (COLLECTOR_CONNECTIONS): databases, HTTP bases, file roots.

A job spec refers to one by name (`"connection": "warehouse"`) and never sees what is behind it. Secret parts
(passwords, tokens, a URL with a password, header values) are sealed with COLLECTOR_SECRET_KEY (`collector
seal`) or read from an environment variable the file names, never written in the file in plain text.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from collector.errors import ConfigError, SettingError
from collector.http_client import HttpClient, origin
from collector.rates import Rate, connection_bucket, parse_rate
from collector.resources import databases
from collector.resources.dataroot import Root, check_root
from collector.sealing import Sealer

KINDS = ("database", "http", "files")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
KEYS = {
    "database": ("url", "password"),
    "http": ("base_url", "headers", "token", "username", "password", "secret", "rate_limit"),
    "files": ("root", "read_only"),
}
SETTING = "COLLECTOR_CONNECTIONS"


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Connection:
    """One named connection. Only `describe()` (name and kind) is ever shown to a client."""

    name: str
    kind: str
    url: URL | None = None                                          # database: the password filled in
    base_url: str = ""                                              # http
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)   # http: credentials included
    root: Root | None = None                                        # files
    signing_key: str = ""                                           # http: what webhook deliveries are signed with
    rate_limit: Rate | None = None                                  # http: its requests over every job and pool
    secrets: tuple[str, ...] = ()                                   # values masked wherever they could show

    def __repr__(self) -> str:
        return f"Connection({self.name!r}, {self.kind})"

    def describe(self) -> dict[str, str]:
        shown = {"name": self.name, "kind": self.kind}
        if self.rate_limit is not None:
            shown["rate_limit"] = str(self.rate_limit)
        return shown

    @property
    def backend(self) -> str:
        """The database's SQLAlchemy backend name (`postgresql`, `mysql`, `sqlite`), '' for other kinds."""
        return self.url.get_backend_name() if self.url is not None else ""

    def create_engine(
        self, *, drivername: str | None = None, query: Mapping[str, str] | None = None, **options: Any
    ) -> sa.Engine:
        """The one place a database connection becomes a SQLAlchemy engine. Host, port and database come from
        the connections file only; a caller picks the driver and adds query defaults the URL does not set."""
        assert self.url is not None, f"connection {self.name!r} is not a database"
        url = self.url if drivername is None else self.url.set(drivername=drivername)
        missing = {k: v for k, v in (query or {}).items() if k not in url.query}
        if missing:
            url = url.update_query_dict(missing)
        return databases.create_engine(url, trusted=True, **options)  # the operator's own destination

    def http_client(
        self, *, headers: Mapping[str, str] | None = None, secrets: Iterable[str] = (), **options: Any
    ) -> HttpClient:
        """The one place an http connection becomes a client. Its headers and credentials go with every request
        under its base URL (its host and port, a path inside the base's), which is reached whatever its address;
        a next link or redirect anywhere else is checked as a job's own URL is, and sent without them."""
        client = HttpClient(headers={**(headers or {}), **self.headers}, secrets=[*secrets, *self.secrets],
                            private_headers=[*self.headers, *(headers or {})], trusted_base=self.base_url,
                            rate_buckets=({connection_bucket(self.name): self.rate_limit} if self.rate_limit else None),
                            **options)
        client.auth_origin = origin(self.base_url)
        return client

    def url_for(self, reference: str | None, *, setting: str) -> str:
        """`reference` (a path and query relative to the base URL; empty for the base itself) as a URL under the
        base. `SettingError(setting)` when it names another host or climbs out of the base path."""
        reference = reference or ""
        parts = urllib.parse.urlsplit(reference)
        shown = f"{setting} {reference!r}"
        if parts.scheme or parts.netloc or reference.startswith(("/", "\\")):
            raise SettingError(setting, f"{shown} must be relative to the base URL of connection {self.name!r} "
                                        "(e.g. 'items?page=1'), not a URL or an absolute path")
        if ".." in urllib.parse.unquote(parts.path).replace("\\", "/").split("/"):
            raise SettingError(setting, f"{shown} climbs out of the base URL of connection {self.name!r} with '..'")
        return urllib.parse.urljoin(self.base_url.rstrip("/") + "/", reference) if reference else self.base_url


def load(
    path: str | None,
    *,
    environ: Mapping[str, str],
    secret_key: str | None,
    code_dirs: tuple[list[str], list[str]] = ([], []),
) -> dict[str, Connection]:
    """Every connection in the file at `path` (none without one); `ConfigError` names the entry at fault."""
    if not path:
        return {}
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{SETTING}={path!r}: there is no such file; point it at the connections file "
                          "(TOML, see the README) or unset it") from None
    except OSError as exc:
        raise ConfigError(f"{SETTING}={path!r} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{SETTING}={path!r} is not valid TOML: {exc}") from None
    reader = _Reader(path=path, environ=environ, secret_key=secret_key, code_dirs=code_dirs)
    return {name: reader.connection(name, entry) for name, entry in document.items()}


class _Reader:
    """Reads the entries of one connections file; each error names its file, entry and key."""

    def __init__(self, *, path: str, environ: Mapping[str, str], secret_key: str | None,
                 code_dirs: tuple[list[str], list[str]]) -> None:
        self.path, self.environ, self.code_dirs = path, environ, code_dirs
        self.folder = os.path.dirname(os.path.abspath(path))
        self.sealer = Sealer(secret_key) if secret_key else None

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{SETTING}={self.path!r}, connection {name!r}: {message}",
                           details={"connection": name})

    def connection(self, name: str, entry: Any) -> Connection:
        if not NAME.fullmatch(name):
            raise self.error(name, "a name is 1-64 letters, digits, '_', '-' or '.'; rename the entry")
        if not isinstance(entry, dict):
            raise self.error(name, f'write it as a table: [{name}] with kind = "database", "http" or "files"')
        kind = entry.get("kind")
        if kind not in KINDS:
            raise self.error(name, f"kind = {kind!r} is not a kind; use one of {', '.join(KINDS)}")
        unknown = sorted(set(entry) - {"kind", *KEYS[kind]})
        if unknown:
            raise self.error(name, f"unknown key(s) {', '.join(unknown)} for kind {kind!r}; "
                                   f"it takes {', '.join(KEYS[kind])}")
        return getattr(self, f"_{kind}")(name, entry)

    def value(self, name: str, key: str, raw: Any, *, secret: bool, found: list[str]) -> str:
        """A text value: plain, `{env = "VAR"}` or `{sealed = "..."}`; secrets read so are added to `found`."""
        if isinstance(raw, str):
            if secret:
                raise self.error(name, f"{key} is written in plain text; seal it (`collector seal`) and write "
                                       f'{key} = {{sealed = "..."}}, or name an environment variable: '
                                       f'{key} = {{env = "VARIABLE"}}')
            return raw
        if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("env", "sealed"):
            raise self.error(name, f'{key} must be text, {{env = "VARIABLE"}} or {{sealed = "..."}}')
        (how, ref), = raw.items()
        if not isinstance(ref, str) or not ref:
            raise self.error(name, f"{key}: {how} must be a non-empty string")
        if how == "env":
            value = self.environ.get(ref)
            if not value:
                raise self.error(name, f"{key} comes from the environment variable {ref}, which is not set "
                                       "(or empty) in this process; set it for the API and every worker")
        else:
            if self.sealer is None:
                raise self.error(name, f"{key} is sealed but COLLECTOR_SECRET_KEY is not set; set the key it was "
                                       "sealed with")
            try:
                value = self.sealer.unseal(ref)
            except ConfigError:
                raise self.error(name, f"{key} cannot be unsealed with this COLLECTOR_SECRET_KEY; seal it again "
                                       "with `collector seal` under the key the API and workers use") from None
            if not isinstance(value, str) or not value:
                raise self.error(name, f"{key} is sealed but holds no text; seal the value itself")
        found.append(value)
        return value

    def _database(self, name: str, entry: dict[str, Any]) -> Connection:
        secrets: list[str] = []
        if "url" not in entry:
            raise self.error(name, 'a database connection needs url = "postgresql://user@host/db" (a SQLAlchemy URL)')
        text = self.value(name, "url", entry["url"], secret=False, found=secrets)
        try:
            url = make_url(text)
        except ArgumentError:
            raise self.error(name, "url is not a SQLAlchemy URL (e.g. postgresql://user@host/db)") from None
        if url.password and not secrets:
            raise self.error(name, "url holds a password in plain text; move it to password = {env = ...} or "
                                   "{sealed = ...}, or seal the whole url")
        if "password" in entry:
            password = self.value(name, "password", entry["password"], secret=True, found=secrets)
            url = url.set(password=password)
        if url.password:
            secrets.append(url.password)
        return Connection(name=name, kind="database", url=url, secrets=tuple(secrets))

    def _http(self, name: str, entry: dict[str, Any]) -> Connection:
        secrets: list[str] = []
        base = self.value(name, "base_url", entry.get("base_url", ""), secret=False, found=secrets)
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(name, 'base_url must be an http:// or https:// URL, e.g. "https://api.example.com/v1"')
        if parts.username or parts.password:
            raise self.error(name, "base_url must not hold credentials; give username and password (or token)")
        raw_headers = entry.get("headers", {})
        if not isinstance(raw_headers, dict):
            raise self.error(name, 'headers must be a table: headers = {Accept = "application/json"}')
        headers = {str(k): self.value(name, f"headers.{k}", v, secret=False, found=secrets)
                   for k, v in raw_headers.items()}
        token = entry.get("token")
        if token is not None and ("username" in entry or "password" in entry):
            raise self.error(name, "give either token, or username and password, not both")
        if token is not None:
            headers["Authorization"] = f"Bearer {self.value(name, 'token', token, secret=True, found=secrets)}"
        elif "password" in entry or "username" in entry:
            if "username" not in entry or "password" not in entry:
                raise self.error(name, "basic auth needs both username and password")
            username = self.value(name, "username", entry["username"], secret=False, found=[])
            password = self.value(name, "password", entry["password"], secret=True, found=secrets)
            pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {pair}"
            secrets.append(pair)
        signing_key = ""
        if "secret" in entry:  # the HMAC key notifications to this connection are signed with; never sent
            signing_key = self.value(name, "secret", entry["secret"], secret=True, found=secrets)
        return Connection(name=name, kind="http", base_url=base, headers=headers, signing_key=signing_key,
                          rate_limit=self._rate_limit(name, entry), secrets=tuple(secrets))

    def _rate_limit(self, name: str, entry: dict[str, Any]) -> Rate | None:
        if "rate_limit" not in entry:
            return None
        try:
            return parse_rate(entry["rate_limit"])
        except ValueError as exc:
            raise self.error(name, f"rate_limit = {exc}") from None

    def _files(self, name: str, entry: dict[str, Any]) -> Connection:
        raw = entry.get("root")
        if not isinstance(raw, str) or not raw:
            raise self.error(name, 'a files connection needs root = "/srv/exports" (relative: to this file\'s folder)')
        read_only = entry.get("read_only", False)
        if not isinstance(read_only, bool):
            raise self.error(name, "read_only must be true or false")
        folder = os.path.join(self.folder, os.path.expanduser(raw))
        if not os.path.isdir(folder):
            raise self.error(name, f"root {raw!r} is not a folder on this host ({os.path.abspath(folder)}); "
                                   "create it or fix the path")
        inside, contain = self.code_dirs
        if not read_only:
            try:
                check_root(folder, setting=f"root {raw!r}", inside=inside, contain=contain)
            except ConfigError as exc:
                raise self.error(name, exc.message + ", or make it read_only = true") from None
        label = f"the root of connection {name!r}"
        return Connection(name=name, kind="files", root=Root(folder, label=label, read_only=read_only,
                                                               code_dirs=inside))
