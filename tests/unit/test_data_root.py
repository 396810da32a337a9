"""The data root: local paths of a spec are refused at submit when they leave it, and again when opened."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

import platforms
from collector.config import Config
from collector.errors import ConfigError, UnsafePathError
from collector.resources import reach
from collector.resources.dataroot import Root
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from storage.files import CsvStorage, JsonlStorage
from tests.unit.conftest import SECRET_KEY as KEY

PLATFORMS_DIR = Path(platforms.__path__[0])
# A job with a storage target and no source file: three rows from an in-memory SQLite.
ROWS = {"url": "sqlite:///:memory:", "query": "SELECT 1 AS id UNION ALL SELECT 2 UNION ALL SELECT 3"}


def submit(client: FlaskClient, platform_id: str, settings: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post("/execution/run", json={"platform_id": platform_id, "settings": settings})
    return response.status_code, response.get_json()


def refused(client: FlaskClient, fake_redis: fakeredis.FakeRedis, platform_id: str, settings: dict[str, Any],
            field: str) -> str:
    """Submit; assert a 422 naming `field` and nothing written; return the message for `field`."""
    status, body = submit(client, platform_id, settings)
    assert status == 422, body
    assert field in body["details"], body["details"]
    assert fake_redis.dbsize() == 0
    return " ".join(body["details"][field])


# -- the attacks of issue 13, at submit


def test_reading_the_workers_environment_through_csv_source_is_refused(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    message = refused(client, fake_redis, "csv_source",
                      {"path": "/proc/self/environ", "delimiter": "\u0000", "has_header": False}, "settings.path")
    assert "absolute" in message and "data root" in message
    refused(client, fake_redis, "csv_source", {"path": "/etc/passwd"}, "settings.path")


@pytest.mark.parametrize(
    ("path", "needle"),
    [("../outside.csv", "'..'"), ("exports/../../outside.csv", "'..'"), ("~/outside.csv", "'~'"),
     ("~root/.ssh/id_rsa", "'~'"), ("", "relative to the data root"), (".", "names the data root itself")],
)
def test_paths_that_climb_out_or_start_at_home_are_refused(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, path: str, needle: str
) -> None:
    assert needle in refused(client, fake_redis, "csv_source", {"path": path}, "settings.path")


@pytest.mark.parametrize("kind", ["csv", "jsonl", "sqlite"])
def test_file_storage_outside_the_data_root_is_refused_under_its_path(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, tmp_path: Path, kind: str
) -> None:
    storage = {"type": kind, "settings": {"path": str(tmp_path / "elsewhere.out"), "table": "t"}}
    if kind != "sqlite":
        del storage["settings"]["table"]
    message = refused(client, fake_redis, "sql_query", {**ROWS, "storage": storage}, "settings.storage.settings.path")
    assert "absolute" in message
    storage["settings"]["path"] = "../elsewhere.out"
    refused(client, fake_redis, "sql_query", {**ROWS, "storage": storage}, "settings.storage.settings.path")


def test_a_symlink_out_of_the_data_root_is_refused(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, data_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("token\nhunter2\n")
    (data_dir / "shared").symlink_to(outside)
    (data_dir / "passwd.csv").symlink_to("/etc/passwd")
    message = refused(client, fake_redis, "csv_source", {"path": "shared/secret.csv"}, "settings.path")
    assert "symlink 'shared'" in message and str(outside) not in message   # the link's target is not shown
    refused(client, fake_redis, "csv_source", {"path": "passwd.csv"}, "settings.path")
    storage = {"type": "jsonl", "settings": {"path": "shared/rows.jsonl"}}
    refused(client, fake_redis, "sql_query", {**ROWS, "storage": storage}, "settings.storage.settings.path")


def test_writing_code_into_the_platforms_package_is_refused(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    # The attack: a query whose column name is Python, written by the csv target where platforms are imported.
    query = {"url": "sqlite:///:memory:", "query": "SELECT 1 AS \"import os; os.system('id')  #\""}
    for target in (str(PLATFORMS_DIR / "zz.py"), "../platforms/zz.py", "zz.py", "sub/evil.pth"):
        for kind in ("csv", "jsonl"):
            settings = {**query, "storage": {"type": kind, "settings": {"path": target}}}
            refused(client, fake_redis, "sql_query", settings, "settings.storage.settings.path")
    assert "Python code file" in refused(
        client, fake_redis, "sql_query", {**query, "storage": {"type": "csv", "settings": {"path": "zz.py"}}},
        "settings.storage.settings.path")
    assert not (PLATFORMS_DIR / "zz.py").exists()


@pytest.mark.parametrize(
    "url", ["sqlite:////etc/collector.db", "sqlite:///../outside.db", "sqlite:///file:/etc/x.db?uri=true",
            "sqlite:///~/x.db"],
)
def test_sqlite_urls_outside_the_data_root_are_refused(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, url: str
) -> None:
    refused(client, fake_redis, "sql_query", {"url": url, "query": "SELECT 1"}, "settings.url")


def test_paths_inside_the_data_root_are_taken(client: FlaskClient, data_dir: Path) -> None:
    (data_dir / "in").mkdir()
    (data_dir / "in" / "rows.csv").write_text("a\n1\n")
    assert submit(client, "csv_source", {"path": "in/rows.csv"})[0] == 202
    assert submit(client, "csv_source", {"path": "./in//rows.csv"})[0] == 202
    assert submit(client, "sql_query", {"url": "sqlite:///in/x.db", "query": "SELECT 1"})[0] == 202
    assert submit(client, "sql_query", {**ROWS, "storage": {"type": "csv", "settings": {"path": "new/out.csv"}}}
                  )[0] == 202


# -- checked again where the job runs, and when the file is opened


def queued(config: Config, platform_id: str, settings: dict[str, Any]) -> tuple[str, fakeredis.FakeRedis, Registry]:
    """Submit a job (its paths pass the checks as things are now); the test changes the files, then runs it."""
    fake = fakeredis.FakeRedis()
    registry = Registry.discover("platforms")
    job_id = Submitter(connection=fake, config=config, registry=registry).submit(
        {"platform_id": platform_id, "settings": settings})["job_id"]
    return job_id, fake, registry


def dump(fake: fakeredis.FakeRedis) -> bytes:
    return b"".join(fake.dump(key) or b"" for key in fake.keys("*"))


@pytest.mark.parametrize("platform_id", ["csv_source", "sql_query"])
def test_a_symlink_planted_after_submit_fails_the_job_and_nothing_is_read(
    data_dir: Path, tmp_path: Path, platform_id: str
) -> None:
    config = Config(secret_key=KEY, data_dir=str(data_dir))
    outside = tmp_path / "outside.db"
    with closing(sqlite3.connect(outside)) as db:
        db.execute("CREATE TABLE secrets (v TEXT)")
        db.execute("INSERT INTO secrets VALUES ('hunter2')")
        db.commit()
    (data_dir / "in.db").write_bytes(b"")
    settings = ({"path": "in.db", "delimiter": "\u0000", "has_header": False} if platform_id == "csv_source"
                else {"url": "sqlite:///in.db", "query": "SELECT * FROM secrets"})
    job_id, fake, registry = queued(config, platform_id, settings)
    (data_dir / "in.db").unlink()
    (data_dir / "in.db").symlink_to(outside if platform_id == "sql_query" else Path("/proc/self/environ"))
    with pytest.raises(Exception, match="symlink"):
        execute(job_id, Runtime(config, fake, registry))
    view = JobStore(fake, config).view(job_id, full=True)
    assert view is not None and view["status"] == "failed" and "symlink" in view["error"]["message"]
    assert b"hunter2" not in dump(fake) and b"PATH=" not in dump(fake)


def test_a_symlink_planted_between_the_check_and_the_open_is_not_followed(data_root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.csv"
    victim.write_text("id\n0\n")                          # the same header: an append through a link lands there
    appending = CsvStorage(path="out/rows.csv")           # checked now: nothing there yet
    (data_root / "out").mkdir()
    (data_root / "out" / "rows.csv").symlink_to(victim)
    with pytest.raises(UnsafePathError, match=r"'rows\.csv' is a symlink"):
        appending.write([{"id": 1}])
    replacing = JsonlStorage(path="out/rows.jsonl", mode="replace")
    (data_root / "out" / "rows.jsonl").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        replacing.write([{"id": 1}])
    through = JsonlStorage(path="elsewhere/rows.jsonl")
    (data_root / "elsewhere").symlink_to(tmp_path)          # a folder on the way
    with pytest.raises(UnsafePathError, match="'elsewhere' is a symlink"):
        through.write([{"id": 1}])
    assert victim.read_text() == "id\n0\n" and not (tmp_path / "rows.jsonl").exists()
    assert sorted(os.listdir(data_root / "out")) == ["rows.csv", "rows.jsonl"]     # no temporary file left


def test_a_sqlite_file_swapped_for_a_symlink_after_the_check_is_not_opened(data_root: Path, tmp_path: Path) -> None:
    from platforms.sql_query import SqlQuery
    from storage.sql import SQLiteStorage

    (data_root / "app.db").write_bytes(b"")
    query = SqlQuery(url="sqlite:///app.db", query="SELECT 1")
    target = SQLiteStorage(path="out.db", table="t")
    (data_root / "app.db").unlink()
    (data_root / "app.db").symlink_to(tmp_path / "outside.db")
    (data_root / "out.db").symlink_to(tmp_path / "written.db")
    with pytest.raises(UnsafePathError, match="symlink"):
        query._run(type("Ctx", (), {"add_secrets": lambda self, values: None})())
    with pytest.raises(UnsafePathError, match="symlink"):
        target.write([{"id": 1}])
    assert not (tmp_path / "outside.db").exists() and not (tmp_path / "written.db").exists()


def test_opening_refuses_fifos_and_files_that_are_folders(data_root: Path) -> None:
    os.mkfifo(data_root / "pipe.csv")
    (data_root / "folder.csv").mkdir()
    root = reach.current().data_root
    with pytest.raises(UnsafePathError, match="not a regular file"):
        root.file("pipe.csv", write=False).open("r")     # would block forever on a FIFO without O_NONBLOCK
    with pytest.raises(UnsafePathError, match="not a regular file"):
        root.file("folder.csv", write=False).open("r")
    (data_root / "plain.csv").write_text("x")
    with pytest.raises(UnsafePathError, match="not a folder"):
        root.file("plain.csv/x.csv", write=True).open("w")


def test_a_new_file_and_its_folders_are_made_under_the_root(data_root: Path) -> None:
    storage = JsonlStorage(path="a/b/c/rows.jsonl")
    assert storage.write([{"id": 1}]) == 1
    assert (data_root / "a" / "b" / "c" / "rows.jsonl").read_text() == '{"id": 1}\n'
    replaced = CsvStorage(path="a/b/c/rows.csv", mode="replace")
    replaced.write([{"id": 2}])
    assert sorted(os.listdir(data_root / "a" / "b" / "c")) == ["rows.csv", "rows.jsonl"]


# -- the data root itself, checked at start-up


def test_a_data_root_holding_code_stops_start_up(tmp_path: Path) -> None:
    repository = PLATFORMS_DIR.parent
    for folder, needle in ((repository, "contains"), (PLATFORMS_DIR, "lies in"), (PLATFORMS_DIR / "data", "lies in"),
                           (Path(os.__file__).parent, "lies in"), (Path("/"), "contains")):
        with pytest.raises(ConfigError, match=needle) as caught:
            reach.Reach.from_config(Config(data_dir=str(folder)))
        assert "COLLECTOR_DATA_DIR" in caught.value.message


def test_the_api_refuses_to_start_on_a_data_root_holding_code(
    fake_redis: fakeredis.FakeRedis, registry: Registry
) -> None:
    from collector.app import create_app

    with pytest.raises(ConfigError, match="COLLECTOR_DATA_DIR"):
        create_app(Config(secret_key=KEY, data_dir=str(PLATFORMS_DIR.parent)), connection=fake_redis,
                   registry=registry, dashboard=False)


def test_the_default_data_root_is_data_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    site = reach.ensure(Config(), create_root=True)
    assert site.data_root.path == str((tmp_path / "data").resolve())
    assert (tmp_path / "data").is_dir()


def test_a_root_given_through_a_symlink_is_resolved_once(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "data"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    root = Root(str(tmp_path / "link"), label="the data root")
    assert root.path == str(real)
    assert root.file("x.csv", write=True).path == str(real / "x.csv")
