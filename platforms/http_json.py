"""Records from a JSON HTTP API: auth, pagination, retries with backoff, nested records flattened."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from collector import egress
from collector.http_client import BODY_SNIPPET, CLIENT_HEADERS, HttpClient, origin
from collector.incremental import Incremental, encode
from collector.masking import mask_text
from collector.platform import FatalError, Platform, Secret, SettingError, Storage
from collector.resources import reach

Pagination = Literal["none", "page", "offset", "next_link", "cursor"]


def dig(document: Any, path: str) -> Any:
    """The value at a dotted path (`data.items`, `results.0.rows`); `KeyError` names the step that is missing."""
    value = document
    for step in [s for s in path.split(".") if s]:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.lstrip("-").isdigit() and -len(value) <= int(step) < len(value):
            value = value[int(step)]
        else:
            keys = sorted(value)[:20] if isinstance(value, dict) else type(value).__name__
            raise KeyError(f"{step!r} is not in the response at {path!r} (found: {keys})")
    return value


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys: `{"a": {"b": 1}}` → `{"a.b": 1}`; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class HttpJson(Platform):
    """Records from a JSON HTTP API, page after page.

    `record_path` (dotted, e.g. `data.items`; empty for the whole body) points at the list of records in each
    response. Pagination: `page` sends `page_param` = start_page, start_page+1, ...; `offset` sends
    `offset_param`/`limit_param` (limit = page_size, 100 if unset); both stop at a page with fewer records than
    page_size (or none). `next_link` follows the URL at `next_link_path` (or a `Link: <...>; rel="next"` header);
    `cursor` sends the value found at `cursor_path` back as `cursor_param`; both stop when there is none.
    With GET, parameters go in the query string; with POST, `body` plus the paging parameters go as a JSON body.
    Auth: `token` as a bearer token (or as the query parameter `token_param`), or `username`/`password` as
    HTTP basic auth; credentials are only sent to the host of `url`. Or name an `http` `connection` the
    operator defined: `url` is then relative to its base URL (empty: the base itself), and its headers and
    credentials go with every request to that host. 408/429/5xx and connection errors are
    retried `max_retries` times with exponential backoff from `backoff_s` (a `Retry-After` header wins).
    Datasets: `original` holds each response body, `processed` the records with nested objects flattened to
    `a.b` keys; `storage` receives the processed records page by page.
    Incremental mode: with `cursor_field` (a record's field, dotted for nested ones, e.g. `updated_at`), a run
    keeps only the records whose cursor is newer than the newest the last finished run of the spec's `state_key`
    (or schedule) saw, else than `cursor_start`, and saves the newest it saw; `since_param` also sends that
    bookmark to the API as a parameter, so it can leave older records out itself.
    """

    OFFSET_PAGE_SIZE = 100

    def __init__(
        self,
        url: str | None = None,
        connection: str | None = None,
        method: Literal["GET", "POST"] = "GET",
        headers: dict[str, Secret] | None = None,
        params: dict | None = None,
        body: dict | None = None,
        token: Secret | None = None,
        token_param: str | None = None,
        username: str | None = None,
        password: Secret | None = None,
        record_path: str = "",
        pagination: Pagination = "none",
        page_param: str = "page",
        start_page: int = 1,
        page_size: int | None = None,
        size_param: str = "per_page",
        offset_param: str = "offset",
        limit_param: str = "limit",
        next_link_path: str = "next",
        cursor_param: str = "cursor",
        cursor_path: str = "next_cursor",
        max_pages: int | None = None,
        cursor_field: str | None = None,
        cursor_start: str | None = None,
        since_param: str | None = None,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 30.0,
        storage: Storage | None = None,
    ) -> None:
        own = sorted(str(k) for k in headers or {} if str(k).lower() in CLIENT_HEADERS)
        if own:
            raise SettingError("headers", f"header(s) {', '.join(own)} are set by the client itself (Host is the url's "
                                          "host); drop them")
        named = reach.connection(connection, kinds=("http",)) if connection is not None else None
        if named is not None:
            given = [n for n, v in (("token", token), ("username", username), ("password", password)) if v]
            if given:
                raise SettingError(given[0], f"connection {connection!r} brings its own credentials; "
                                             f"drop {', '.join(given)}")
            taken = {name.lower() for name in named.headers}
            clash = sorted(str(k) for k in headers or {} if str(k).lower() in taken)
            if clash:
                raise SettingError("headers", f"header(s) {', '.join(clash)} are set by connection {connection!r}; "
                                              "drop them")
            url = named.url_for(url, setting="url")
        elif url is None:
            raise SettingError("url", "give url (http:// or https://), or the name of an http connection")
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise SettingError("url", f"url {mask_text(url)!r} must start with http:// or https://")
        if named is None:  # a connection's own host is the operator's choice
            egress.current().check_url(url, setting="url")
        if token and (username or password):
            raise ValueError("give either token, or username and password (basic auth), not both")
        if password and not username:
            raise ValueError("password is set but username is not; basic auth needs both")
        if token_param and not token:
            raise ValueError("token_param is set but token is not; give the token to send")
        if (cursor_start is not None or since_param is not None) and not cursor_field:
            raise SettingError("cursor_field", "cursor_start and since_param need cursor_field, the record field "
                                               "that orders the records (e.g. updated_at)")
        if body is not None and method != "POST":
            raise ValueError("body is only sent with method POST; set method to POST or drop body")
        for name, value in (("page_size", page_size), ("max_pages", max_pages)):
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be 1 or more (or left unset)")
        if max_retries < 0 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError("max_retries and backoff_s must be 0 or more, timeout_s more than 0")
        self.url, self.method, self.record_path, self.pagination = url, method, record_path, pagination
        self.params, self.body = dict(params or {}), dict(body or {})
        self.token, self.token_param, self.username, self.password = token, token_param, username, password
        self.page_param, self.start_page, self.size_param = page_param, start_page, size_param
        self.page_size = page_size or (self.OFFSET_PAGE_SIZE if pagination == "offset" else None)
        self.offset_param, self.limit_param = offset_param, limit_param
        self.next_link_path, self.cursor_param, self.cursor_path = next_link_path, cursor_param, cursor_path
        self.max_pages, self.storage = max_pages, storage
        self.cursor_field, self.cursor_start, self.since_param = cursor_field, cursor_start, since_param
        self._since: Any = None  # the bookmark sent as since_param
        secrets = [s for s in (token, password) if s]
        auth: dict[str, str] = {}
        if token and not token_param:
            auth["Authorization"] = f"Bearer {token}"
        elif username:
            pair = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            auth["Authorization"] = f"Basic {pair}"
            secrets.append(pair)
        header_values = {str(k): str(v) for k, v in (headers or {}).items()}
        secrets += header_values.values()  # API keys travel in headers: every header value is a secret
        options: dict[str, Any] = {"max_retries": max_retries, "backoff_s": backoff_s, "timeout_s": timeout_s}
        if named is not None:
            self.client = named.http_client(headers={"Accept": "application/json", **header_values}, secrets=secrets,
                                            **options)
        else:
            self.client = HttpClient(headers={"Accept": "application/json", **header_values, **auth},
                                     secrets=secrets, private_headers=header_values, **options)
            self.client.auth_origin = origin(url)

    def _run(self, ctx):
        ctx.add_secrets(self.client.secrets)
        self.client.on_retry = ctx.log.warning
        original: list[dict[str, Any]] = []
        processed: list[dict[str, Any]] = []
        incremental = None
        if self.cursor_field:
            incremental = Incremental(self.cursor_field, start=self.cursor_start, saved=ctx.saved_state)
            self._since = None if incremental.since is None else encode(incremental.since)[0]
        for number, (url, document, records) in enumerate(self._pages(), start=1):
            original.append({"page": number, "url": self.client.mask(url), "body": document})
            rows = [flatten(r) if isinstance(r, dict) else {"value": r} for r in records]
            if incremental is not None:
                rows = [row for row in rows if incremental.is_new(self._cursor(row))]
            processed.extend(rows)
            if self.storage is not None and rows:
                self.storage.write(rows)
            ctx.progress(number, self.max_pages, f"page {number}, {len(processed)} records")
        ctx.dataset("original", original)
        ctx.dataset("processed", processed)
        summary: dict[str, Any] = {"records": len(processed), "pages": len(original)}
        if self.storage is not None:
            summary["stored"] = self.storage.rows_written
        if incremental is not None:
            ctx.save_state(incremental.state())
            summary["incremental"] = incremental.summary()
        return summary

    def _cursor(self, row: dict[str, Any]) -> Any:
        """The cursor of a flattened record; `FatalError` when the record has no such field (a misspelt
        cursor_field would collect everything on every run)."""
        if self.cursor_field in row:
            return row[self.cursor_field]
        raise FatalError(f"a record has no field {self.cursor_field!r} (its fields: "
                         f"{sorted(row)[:20]}); fix cursor_field (nested fields are dotted: a.b)")

    def _check(self) -> str:
        """The first request the job would send (credentials, parameters and, for POST, the body), once and without
        reading the answer: the host is reached through the egress policy, and a 401/403 says the credentials
        were refused."""
        url, data = self._prepare(self.url, self._first_paging(), first=True)
        return self.client.probe(url, method=self.method, body=data)

    def _first_paging(self) -> dict[str, Any]:
        paging: dict[str, Any] = {}
        if self.pagination == "page":
            paging[self.page_param] = self.start_page
        elif self.pagination == "offset":
            paging[self.offset_param] = 0
        if self.page_size and self.pagination in ("page", "offset"):
            paging[self.size_param if self.pagination == "page" else self.limit_param] = self.page_size
        return paging

    def _pages(self) -> Iterator[tuple[str, Any, list[Any]]]:
        """(url, body, records) per page until the pagination style says there are no more, or max_pages."""
        paging = self._first_paging()
        url: str | None = self.url
        seen: set[str] = set()
        pages, last_raw = 0, b""
        while url is not None and (self.max_pages is None or pages < self.max_pages):
            current, data = self._prepare(url, paging, first=pages == 0)
            raw, headers = self.client.request(current, method=self.method, body=data)
            if raw == last_raw and self.pagination in ("page", "offset"):
                return      # the API ignores the paging parameters: the same page again would loop forever
            last_raw = raw
            document = self._decode(current, raw)
            records = self._records(current, document)
            pages += 1
            yield current, document, records
            url = None
            if self.pagination in ("page", "offset"):
                if records and (self.page_size is None or len(records) >= self.page_size):
                    step = 1 if self.pagination == "page" else len(records)
                    key = self.page_param if self.pagination == "page" else self.offset_param
                    paging[key] += step
                    url = self.url
            elif self.pagination == "next_link":
                link = self._optional(document, self.next_link_path) or link_header_next(headers.get("Link"))
                url = urllib.parse.urljoin(current, str(link)) if link else None
                if url is not None and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                    raise FatalError(self.client.mask(f"the next link {url!r} is not an http(s) URL; "
                                                      "check next_link_path"))
            elif self.pagination == "cursor":
                cursor = self._optional(document, self.cursor_path)
                if cursor not in (None, "") and str(cursor) not in seen:  # a repeated cursor would loop forever
                    seen.add(str(cursor))
                    paging[self.cursor_param] = cursor
                    url = self.url

    def _prepare(self, url: str, paging: dict[str, Any], *, first: bool) -> tuple[str, bytes | None]:
        """The URL and JSON body of one request; a next link is followed as given, only the token added."""
        query = dict(self.params) if first or self.pagination != "next_link" else {}
        if self.since_param and self._since is not None and (first or self.pagination != "next_link"):
            paging = {**paging, self.since_param: self._since}
        if self.method == "GET":
            query.update(paging)
        if self.token_param and origin(url) == origin(self.url):
            query[self.token_param] = str(self.token)
        if query:
            sep = "&" if urllib.parse.urlsplit(url).query else "?"
            url = f"{url}{sep}{urllib.parse.urlencode(query, doseq=True)}"
        if self.method != "POST":
            return url, None
        return url, json.dumps({**self.body, **paging}, default=str).encode()

    def _decode(self, url: str, raw: bytes) -> Any:
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            text = raw[:BODY_SNIPPET].decode("utf-8", "replace")
            raise FatalError(self.client.mask(f"{url} did not answer JSON; it began with {text!r}")) from None

    def _records(self, url: str, document: Any) -> list[Any]:
        try:
            found = dig(document, self.record_path)
        except KeyError as exc:
            message = f"{url}: record_path {self.record_path!r} not found: {exc.args[0]}; fix record_path"
            raise FatalError(self.client.mask(message)) from None
        if found is None:
            return []
        return found if isinstance(found, list) else [found]

    @staticmethod
    def _optional(document: Any, path: str) -> Any:
        try:
            return dig(document, path)
        except KeyError:
            return None


def link_header_next(value: str | None) -> str | None:
    """The `rel="next"` target of an RFC 8288 `Link` header, if there is one."""
    for part in (value or "").split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return target.strip().strip("<>")
    return None
