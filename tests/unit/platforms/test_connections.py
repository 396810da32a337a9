"""Connections the operator names in COLLECTOR_CONNECTIONS: the file, submit checks, listing, secrets."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from collector.app import create_app
from collector.cli import main as cli
from collector.config import Config
from collector.errors import ConfigError
from collector.resources import connections, reach
from collector.run.runner import Runtime, execute
from collector.sealing import Sealer
from collector.specs.registry import Registry
from collector.store.records import JobStore
from platforms.csv_source import CsvSource
from platforms.http_json import HttpJson
from tests.local_server import LocalServer, json_answer
from tests.unit.conftest import SECRET_KEY

# Secrets of the connections, looked for in everything the service keeps.
PASSWORD = "pg-pass-8d1f2c"
TOKEN = "api-token-5b7e9a1c"
API_KEY = "x-api-key-3c4d"


def write(folder: Path, text: str) -> str:
    path = folder / "connections.toml"
    path.write_text(text)
    return str(path)


def load(folder: Path, text: str, **environ: str) -> dict[str, connections.Connection]:
    return connections.load(write(folder, text), environ=environ, secret_key=SECRET_KEY)


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "rows.csv").write_text("id,name\n1,a\n2,b\n")
    return folder


@pytest.fixture
def connections_file(tmp_path: Path, exports: Path, local_server: LocalServer) -> str:
    sealed = Sealer(SECRET_KEY).seal(TOKEN)
    return write(tmp_path, f"""
[warehouse]
kind = "database"
url = "postgresql://collector@127.0.0.1:1/warehouse"
password = {{env = "WAREHOUSE_PASSWORD"}}

[api]
kind = "http"
base_url = "{local_server.base}/v1"
headers = {{Accept = "application/json", X-Api-Key = {{env = "API_KEY"}}}}
token = {{sealed = "{sealed}"}}

[exports]
kind = "files"
root = "exports"

[archive]
kind = "files"
root = "{exports}"
read_only = true
""")


@pytest.fixture
def site_config(unit_config: Config, connections_file: str) -> Config:
    return Config(secret_key=SECRET_KEY, progress_interval_s=0.0, data_dir=unit_config.data_dir,
                  connections=connections_file, environ={"WAREHOUSE_PASSWORD": PASSWORD, "API_KEY": API_KEY})


@pytest.fixture
def app_client(site_config: Config, fake_redis: fakeredis.FakeRedis, registry: Registry) -> Any:
    return create_app(site_config, connection=fake_redis, registry=registry, dashboard=False).test_client()


def everything_kept(fake: fakeredis.FakeRedis) -> bytes:
    return b"".join(fake.dump(key) or b"" for key in fake.keys("*"))


# -- the file


def test_a_good_file_gives_each_connection_its_parts(tmp_path: Path, connections_file: str, exports: Path) -> None:
    found = connections.load(connections_file, environ={"WAREHOUSE_PASSWORD": PASSWORD, "API_KEY": API_KEY},
                             secret_key=SECRET_KEY)
    assert {name: c.kind for name, c in found.items()} == {
        "warehouse": "database", "api": "http", "exports": "files", "archive": "files"}
    warehouse, api = found["warehouse"], found["api"]
    assert warehouse.url is not None and warehouse.url.password == PASSWORD and warehouse.backend == "postgresql"
    assert api.headers["Authorization"] == f"Bearer {TOKEN}" and api.headers["X-Api-Key"] == API_KEY
    assert set(warehouse.secrets) == {PASSWORD} and {TOKEN, API_KEY} <= set(api.secrets)
    assert found["exports"].root is not None and found["exports"].root.path == str(exports.resolve())
    assert found["archive"].root is not None and found["archive"].root.read_only
    for connection in found.values():
        assert PASSWORD not in repr(connection) and TOKEN not in repr(connection)
        assert connection.describe() == {"name": connection.name, "kind": connection.kind}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[w]\nkind = "ftp"', "kind = 'ftp' is not a kind"),
        ('[w]\nkind = "database"\nurl = "postgresql://u@h/d"\nhost = "h"', "unknown key(s) host"),
        ('[w]\nkind = "database"\nurl = "postgresql://u@h/d"\npassword = "hunter2"', "password is written in plain"),
        ('[w]\nkind = "database"\nurl = "postgresql://u:hunter2@h/d"', "url holds a password in plain text"),
        ('[w]\nkind = "database"\nurl = "not a url"', "url is not a SQLAlchemy URL"),
        ('[w]\nkind = "database"', "needs url"),
        ('[w]\nkind = "database"\nurl = "postgresql://u@h/d"\npassword = {env = "NOPE"}', "NOPE, which is not set"),
        ('[w]\nkind = "database"\nurl = "postgresql://u@h/d"\npassword = {sealed = "gAAAA-not-it"}',
         "cannot be unsealed"),
        ('[w]\nkind = "database"\nurl = "postgresql://u@h/d"\npassword = {vault = "x"}', "must be text, {env"),
        ('[w]\nkind = "http"\nbase_url = "ftp://h"', "base_url must be an http"),
        ('[w]\nkind = "http"\nbase_url = "https://u:p@h"', "must not hold credentials"),
        ('[w]\nkind = "http"\nbase_url = "https://h"\ntoken = "abc"', "token is written in plain text"),
        ('[w]\nkind = "http"\nbase_url = "https://h"\nusername = "u"', "needs both username and password"),
        ('[w]\nkind = "files"\nroot = "no/such/folder"', "is not a folder on this host"),
        ('[w]\nkind = "files"', "needs root"),
        ('["a b"]\nkind = "files"\nroot = "."', "a name is 1-64 letters"),
        ("w = 1", "write it as a table"),
    ],
)
def test_a_bad_entry_is_a_config_error_naming_it(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert needle in caught.value.message
    assert "connection " in caught.value.message and str(tmp_path) in caught.value.message
    assert "hunter2" not in caught.value.message


def test_a_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        connections.load(str(tmp_path / "nope.toml"), environ={}, secret_key=None)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path, "[w\nkind=")
    with pytest.raises(ConfigError, match="COLLECTOR_SECRET_KEY is not set"):
        connections.load(write(tmp_path, '[w]\nkind = "http"\nbase_url = "https://h"\ntoken = {sealed = "x"}'),
                         environ={}, secret_key=None)


def test_a_writable_file_root_holding_code_stops_start_up(tmp_path: Path) -> None:
    repository = Path(__file__).resolve().parents[2]
    text = f'[code]\nkind = "files"\nroot = "{repository}"\n'
    with pytest.raises(ConfigError, match=r"connection 'code'.*contains"):
        reach.Reach.from_config(Config(data_dir=str(tmp_path / "data"), connections=write(tmp_path, text)))
    read_only = reach.Reach.from_config(Config(data_dir=str(tmp_path / "data"),
                                               connections=write(tmp_path, text + "read_only = true\n")))
    assert read_only.connections["code"].root.read_only   # type: ignore[union-attr]


def test_the_api_does_not_start_on_a_bad_connections_file(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis, registry: Registry
) -> None:
    bad = Config(secret_key=SECRET_KEY, data_dir=str(tmp_path),
                 connections=write(tmp_path, '[warehouse]\nkind = "database"\nurl = "postgresql://u:pw@h/d"'))
    with pytest.raises(ConfigError, match="connection 'warehouse'"):
        create_app(bad, connection=fake_redis, registry=registry, dashboard=False)


def test_seal_prints_a_value_the_service_unseals(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
                                                 ) -> None:
    monkeypatch.setenv("COLLECTOR_SECRET_KEY", SECRET_KEY)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{TOKEN}\n"))
    assert cli.main(["seal"]) == 0
    sealed = capsys.readouterr().out.strip()
    assert TOKEN not in sealed and Sealer(SECRET_KEY).unseal(sealed) == TOKEN
    monkeypatch.delenv("COLLECTOR_SECRET_KEY")
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKEN))
    assert cli.main(["seal"]) == 2
    assert "COLLECTOR_SECRET_KEY is not set" in capsys.readouterr().err


# -- specs name them


def test_platforms_get_lists_names_and_kinds_and_nothing_behind_them(
    app_client: Any, local_server: LocalServer, exports: Path
) -> None:
    response = app_client.get("/platforms/get")
    assert response.status_code == 200
    assert response.get_json()["connections"] == [
        {"name": "api", "kind": "http"}, {"name": "archive", "kind": "files"},
        {"name": "exports", "kind": "files"}, {"name": "warehouse", "kind": "database"}]
    text = response.get_data(as_text=True)
    for hidden in (PASSWORD, TOKEN, API_KEY, "127.0.0.1", local_server.base, "/v1", str(exports)):
        assert hidden not in text


@pytest.mark.parametrize(
    ("platform_id", "settings", "field", "needle"),
    [
        ("sql_query", {"connection": "nope", "query": "SELECT 1"}, "settings.connection",
         "'nope' is not a connection; the operator defined: api (http), archive (files)"),
        ("sql_query", {"connection": "api", "query": "SELECT 1"}, "settings.connection",
         "connection 'api' is a http connection; connection takes a database connection"),
        ("sql_query", {"connection": "warehouse", "url": "sqlite:///x.db", "query": "SELECT 1"}, "settings.url",
         "not both"),
        ("http_json", {"connection": "warehouse"}, "settings.connection", "takes a http connection"),
        ("http_json", {"connection": "api", "url": "https://elsewhere.example/x"}, "settings.url",
         "must be relative to the base URL"),
        ("http_json", {"connection": "api", "url": "//elsewhere.example/x"}, "settings.url", "relative"),
        ("http_json", {"connection": "api", "url": "../admin"}, "settings.url", "climbs out"),
        ("http_json", {"connection": "api", "url": "%2e%2e/admin"}, "settings.url", "climbs out"),
        ("http_json", {"connection": "api", "token": "mine"}, "settings.token", "brings its own credentials"),
        ("http_json", {"connection": "api", "headers": {"x-api-key": "mine"}}, "settings.headers",
         "set by connection 'api'"),
        ("csv_source", {"connection": "warehouse", "path": "a.csv"}, "settings.connection",
         "takes a files or http connection"),
        ("csv_source", {"connection": "exports", "path": "../rows.csv"}, "settings.path", "'..'"),
        ("csv_source", {"connection": "exports", "url": "rows.csv"}, "settings.url", "files connection"),
        ("csv_source", {"connection": "api", "path": "rows.csv"}, "settings.path", "http connection"),
        ("csv_source", {"path": "rows.csv", "storage": {"type": "csv", "settings": {"connection": "archive",
                                                                                   "path": "out.csv"}}},
         "settings.storage.settings.path", "the root of connection 'archive' is read-only"),
        ("csv_source", {"path": "rows.csv", "storage": {"type": "postgresql", "settings": {
            "connection": "exports", "table": "t"}}}, "settings.storage.settings.connection",
         "takes a database connection"),
        ("csv_source", {"path": "rows.csv", "storage": {"type": "mysql", "settings": {
            "connection": "warehouse", "table": "t"}}}, "settings.storage.settings.connection",
         "is a postgresql database; storage type 'mysql' needs a mysql or mariadb one"),
        ("csv_source", {"path": "rows.csv", "storage": {"type": "postgresql", "settings": {
            "connection": "warehouse", "hostname": "db", "table": "t"}}}, "settings.storage.settings.connection",
         "not both"),
        ("csv_source", {"path": "rows.csv", "storage": {"type": "sqlite", "settings": {
            "connection": "warehouse", "table": "t"}}}, "settings.storage.settings.connection",
         "storage type 'sqlite' needs a sqlite one"),
        ("csv_source", {"path": "rows.csv", "storage": {"type": "jsonl", "settings": {
            "connection": "ghost", "path": "x.jsonl"}}}, "settings.storage.settings.connection",
         "'ghost' is not a connection"),
    ],
)
def test_a_wrong_connection_is_a_422_under_the_fields_path(
    app_client: Any, fake_redis: fakeredis.FakeRedis, site_config: Config,
    platform_id: str, settings: dict[str, Any], field: str, needle: str,
) -> None:
    (Path(site_config.data_dir) / "rows.csv").write_text("a\n1\n")
    response = app_client.post("/execution/run", json={"platform_id": platform_id, "settings": settings})
    body = response.get_json()
    assert response.status_code == 422, body
    assert needle in " ".join(body["details"].get(field, [])), body["details"]
    assert fake_redis.dbsize() == 0
    assert PASSWORD not in json.dumps(body) and TOKEN not in json.dumps(body)


def test_without_a_connections_file_the_message_says_where_they_come_from(client: Any) -> None:
    response = client.post("/execution/run", json={"platform_id": "sql_query",
                                                   "settings": {"connection": "warehouse", "query": "SELECT 1"}})
    assert response.status_code == 422
    assert "this service has none (the operator names them in COLLECTOR_CONNECTIONS)" in \
        response.get_json()["details"]["settings.connection"][0]


# -- what a job does with them


def test_a_files_connection_is_read_and_written_under_its_root(
    site_config: Config, fake_redis: fakeredis.FakeRedis, registry: Registry, exports: Path, data_dir: Path
) -> None:
    app = create_app(site_config, connection=fake_redis, registry=registry, dashboard=False)
    response = app.test_client().post("/execution/run", json={"platform_id": "csv_source", "settings": {
        "connection": "archive", "path": "rows.csv",
        "storage": {"type": "jsonl", "settings": {"connection": "exports", "path": "copies/rows.jsonl"}}}})
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    assert execute(job_id, Runtime(site_config, fake_redis, registry))["stored"] == 2
    assert (exports / "copies" / "rows.jsonl").read_text().splitlines() == [
        '{"id": 1, "name": "a"}', '{"id": 2, "name": "b"}']
    view = JobStore(fake_redis, site_config).view(job_id)
    assert view is not None and view["settings"]["connection"] == "archive"
    assert not (data_dir / "copies").exists()


def test_an_http_connection_sends_its_headers_to_its_base_only(
    site_config: Config, local_server: LocalServer
) -> None:
    reach.ensure(site_config)
    local_server.route("/v1/items", lambda seen, n: json_answer(
        {"rows": [{"id": 1}], "next": local_server.url("/v1/items?p=2").replace("127.0.0.1", "localhost")}))
    platform = HttpJson(connection="api", url="items", record_path="rows", pagination="next_link", max_pages=2)
    assert platform.url == f"{local_server.base}/v1/items"
    platform._run(Ctx())
    first, second = local_server.seen("/v1/items")
    assert first.headers["authorization"] == f"Bearer {TOKEN}" and first.headers["x-api-key"] == API_KEY
    assert first.headers["accept"] == "application/json"
    # The next link names another host (localhost): the connection's credentials stay behind.
    assert "authorization" not in second.headers and "x-api-key" not in second.headers
    assert CsvSource(connection="api", url="export.csv?day=1").url == f"{local_server.base}/v1/export.csv?day=1"
    assert CsvSource(connection="api").url == f"{local_server.base}/v1"


def test_connection_secrets_never_reach_the_record(
    site_config: Config, fake_redis: fakeredis.FakeRedis, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(site_config, connection=fake_redis, registry=registry, dashboard=False)
    response = app.test_client().post("/execution/run", json={"platform_id": "sql_query", "settings": {
        "connection": "warehouse", "query": "SELECT 1 AS one"}})
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    with pytest.raises(Exception, match="TransientError"):        # port 1: nothing listens there
        execute(job_id, Runtime(site_config, fake_redis, registry))
    view = JobStore(fake_redis, site_config).view(job_id, full=True)
    assert view is not None and view["status"] in ("failed", "scheduled")
    assert "connection 'warehouse'" in view["error"]["message"]
    for secret in (PASSWORD, TOKEN, API_KEY):
        assert secret.encode() not in everything_kept(fake_redis)
        assert secret not in caplog.text


def test_credentials_a_server_echoes_stay_masked_however_the_csv_is_read(
    site_config: Config, fake_redis: fakeredis.FakeRedis, registry: Registry, local_server: LocalServer
) -> None:
    """A server that echoes the request's credentials into its CSV: a delimiter that parts the token, or an
    encoding that spells ASCII otherwise, must not hand it to the client through the datasets."""
    local_server.route("/v1/echo.csv", lambda seen, n: (
        200, {"Content-Type": "text/csv"}, f"header\n{seen.headers['authorization']}\n".encode()))
    client = create_app(site_config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    for encoding in ("cp037", "utf-16", "utf-7", "shift_jis", "iso2022_jp"):
        response = client.post("/execution/run", json={"platform_id": "csv_source", "settings": {
            "connection": "api", "url": "echo.csv", "encoding": encoding}})
        assert response.status_code == 422, (encoding, response.get_json())
        assert list(response.get_json()["details"]) == ["settings.encoding"]
    for delimiter in ("-", "5", "7", "a"):
        response = client.post("/execution/run", json={"platform_id": "csv_source", "settings": {
            "connection": "api", "url": "echo.csv", "delimiter": delimiter, "has_header": False,
            "encoding": "latin-1"}})
        assert response.status_code == 202, response.get_json()
        job_id = response.get_json()["job_id"]
        execute(job_id, Runtime(site_config, fake_redis, registry))
        view = JobStore(fake_redis, site_config).view(job_id, full=True)
        assert view is not None and view["status"] == "finished", view
        cells = [cell for row in view["datasets"]["original"] for cell in row.values()]
        assert "Bearer ***" in delimiter.join(cells), cells
        assert TOKEN not in delimiter.join(cells) and TOKEN.encode() not in everything_kept(fake_redis)


def test_a_non_ascii_credential_a_server_echoes_is_not_respelled_past_the_mask(
    unit_config: Config, connections_file: str, fake_redis: fakeredis.FakeRedis, registry: Registry,
    local_server: LocalServer
) -> None:
    """A header value goes out as Latin-1 bytes: echoed back and read in another single-byte encoding, its
    non-ASCII characters would come out as other characters, which the client could spell back."""
    key = "Clé-ÿôü-Secrète-42"
    config = Config(secret_key=SECRET_KEY, progress_interval_s=0.0, data_dir=unit_config.data_dir,
                    connections=connections_file, environ={"WAREHOUSE_PASSWORD": PASSWORD, "API_KEY": key})
    local_server.route("/v1/echo.csv", lambda seen, n: (
        200, {"Content-Type": "text/csv"}, f"header\n{seen.headers['x-api-key']}\n".encode("latin-1")))
    client = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    for encoding in ("cp1251", "koi8-r", "iso8859-7", "latin-1", "mac-roman"):
        response = client.post("/execution/run", json={"platform_id": "csv_source", "settings": {
            "connection": "api", "url": "echo.csv", "encoding": encoding}})
        assert response.status_code == 202, response.get_json()
        job_id = response.get_json()["job_id"]
        execute(job_id, Runtime(config, fake_redis, registry))
        view = JobStore(fake_redis, config).view(job_id, full=True)
        assert view is not None and view["status"] == "finished", view
        [cell] = [cell for row in view["datasets"]["original"] for cell in row.values()]
        assert cell == "***", (encoding, cell)
        kept = everything_kept(fake_redis)
        assert key.encode("latin-1") not in kept and key.encode() not in kept


class Ctx:
    """The least of a run context `_run` needs here."""

    def __init__(self) -> None:
        import logging

        self.log = logging.getLogger("tests.connections")
        self.datasets: dict[str, Any] = {}

    def add_secrets(self, values: Any) -> None:
        pass

    def progress(self, *args: Any) -> None:
        pass

    def dataset(self, name: str, rows: Any) -> None:
        self.datasets[name] = rows


def test_a_connection_trusts_its_own_port_and_base_path_only(tmp_path: Path) -> None:
    """Its base URL is on loopback, which egress refuses jobs: it is reached because the operator named it. A next
    link or redirect to another port of that host, or to a path outside the base, is checked as a job's own URL
    (and refused here), and the connection's credentials never go with it."""
    from collector.errors import EgressError
    from collector.http_client import within

    with LocalServer.serving() as api, LocalServer.serving() as other:
        named = load(tmp_path, f"""
[api]
kind = "http"
base_url = "{api.base}/v1"
token = {{env = "TOKEN"}}
""", TOKEN=TOKEN)["api"]
        api.route("/v1/items", lambda seen, n: json_answer([{"id": 1}]))
        api.route("/v1/hop", lambda seen, n: (302, {"Location": api.url("/admin/keys")}, b""))
        api.route("/admin/keys", lambda seen, n: json_answer({"keys": "internal"}))
        other.route("/secret-internal", lambda seen, n: json_answer({"internal": True}))
        client = named.http_client()
        body, _ = client.request(named.url_for("items", setting="url"))
        assert json.loads(body) == [{"id": 1}]
        assert api.seen("/v1/items")[0].headers["authorization"] == f"Bearer {TOKEN}"
        for elsewhere in (other.url("/secret-internal"), api.url("/admin/keys"), api.url("/v1/../admin/keys"),
                          api.url("/v1/%2e%2e/admin/keys"), api.url("/v1x"), api.url("/v1/hop")):
            with pytest.raises(EgressError, match="jobs may not connect there"):
                client.request(elsewhere)
        assert other.requests == [] and api.seen("/admin/keys") == []
        assert [r.path for r in api.requests] == ["/v1/items", "/v1/hop"], "the redirect was refused, not followed"

    base = "https://api.example.com/v1"
    assert within(base, base) and within(f"{base}/x?y=1", base) and within("https://API.example.com:443/v1/x", base)
    assert not within("http://api.example.com/v1/x", base) and not within("https://api.example.com:8443/v1", base)
    assert not within("https://api.example.com/v10", base) and not within("https://api.example.com/v1/a/../../x", base)


def test_a_connection_sends_no_credentials_outside_its_base_path_on_an_allowed_host(
    tmp_path: Path, local_server: LocalServer
) -> None:
    """Where egress allows the host anyway (127.0.0.1 here), a path outside the base is fetched as a job's own URL
    would be: without the connection's credentials, and so is a redirect there."""
    named = load(tmp_path, f"""
[api]
kind = "http"
base_url = "{local_server.base}/v1"
token = {{env = "TOKEN"}}
headers = {{X-Api-Key = {{env = "API_KEY"}}}}
""", TOKEN=TOKEN, API_KEY=API_KEY)["api"]
    local_server.route("/v1/hop", lambda seen, n: (302, {"Location": local_server.url("/admin/keys")}, b""))
    local_server.route("/admin/keys", lambda seen, n: json_answer({"keys": "internal"}))
    client = named.http_client()
    client.request(local_server.url("/admin/keys"))
    client.request(local_server.url("/v1/hop"))
    hop, = local_server.seen("/v1/hop")
    assert hop.headers["authorization"] == f"Bearer {TOKEN}" and hop.headers["x-api-key"] == API_KEY
    for seen in local_server.seen("/admin/keys"):
        assert "authorization" not in seen.headers and "x-api-key" not in seen.headers
    assert len(local_server.seen("/admin/keys")) == 2
