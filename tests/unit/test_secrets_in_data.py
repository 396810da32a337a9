"""Secret values in what a job keeps: datasets, result, checkpoint, progress and events are masked; mappings of
secrets (`dict[str, Secret]`) are declared, sealed and shown masked."""

from __future__ import annotations

import contextlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from collector import defaults
from collector.config import Config
from collector.errors import ContractError, JobFailedError
from collector.masking import MASK, install_log_masking, mask_json, mask_text, needles
from collector.run.context import RunContext
from collector.run.runner import Runtime, execute
from collector.sealing import Sealer
from collector.specs.job import validate_spec
from collector.specs.registry import Registry
from collector.specs.schema import build_settings_schema
from collector.specs.secrets import merge_secrets, secret_paths, split_secrets
from collector.store.events import keep_platform_logs
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from collector.testkit import redis_contents
from collector.types import Secret
from tests.secret_platforms import ECHOING, install_vault, make_package
from tests.unit.conftest import enqueue_due_now

API_KEY, HEADER_KEY, AUTH = "api-key-5e1f0c9b2a", "hdr-key-8d7c6b5a4f", "Bearer hdr-tok-1a2b3c4d"


@pytest.fixture
def echo_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.syspath_prepend(str(tmp_path))
    return Registry.discover(make_package(tmp_path, "echoplatforms", echoing=ECHOING))


def echo_spec(**settings: Any) -> dict[str, Any]:
    return {"platform_id": "echoing", "settings": {
        "api_key": API_KEY, "headers": {"Authorization": AUTH, "X-Api-Key": HEADER_KEY}, **settings}}


def session_of(api_key: str) -> str:
    import hashlib

    return "sess-" + hashlib.sha256(api_key.encode()).hexdigest()[:20]


# --- mask_json: the masking step of datasets ---------------------------------------------------------------

def reference(value: Any, forms: list[str]) -> Any:
    """What masking must give, done the slow and obvious way on the decoded document."""
    if isinstance(value, str):
        for form in forms:  # longest first, as `needles` gives them
            value = value.replace(form, MASK)
        return value
    if isinstance(value, dict):
        return {reference(k, forms): reference(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [reference(v, forms) for v in value]
    return value


@pytest.mark.parametrize(("rows", "secret", "expected"), [
    ([{"a": "x tok-123456 y"}], "tok-123456", [{"a": "x *** y"}]),
    ([{"tok-123456": 1, "b": {"tok-123456": ["tok-123456"]}}], "tok-123456", [{"***": 1, "b": {"***": ["***"]}}]),
    ([{"a": 'say "hi there"'}], '"hi there"', [{"a": "say ***"}]),
    ([{"a": "back\\slash"}], "k\\sla", [{"a": "bac***sh"}]),
    ([{"a": "née-secret!"}], "née-secret", [{"a": "***!"}]),
    ([{"a": "😀-secret"}], "😀-secret", [{"a": "***"}]),
    ([{"a": '{"token": "a\\"bcd"}'}], 'a"bcd', [{"a": '{"token": "***"}'}]),       # JSON inside a string
    ([{"a": "https://x/?k=a%2Fb%2Bc1"}], "a/b+c1", [{"a": "https://x/?k=***"}]),   # URL-encoded
    ([{"n": 482913, "s": "pin 482913", "t": [482913.5]}], "482913", [{"n": 482913, "s": "pin ***", "t": [482913.5]}]),
    ([{"b": True, "s": "true", "x": None, "y": "null"}], "true", [{"b": True, "s": "***", "x": None, "y": "null"}]),
    ([{"a": "x\nabcd"}], "nabcd", [{"a": "x\nabcd"}]),           # `\n` + abcd is not "nabcd"
    ([{"a": "é1234"}], "00e91234", [{"a": "é1234"}]),            # nor is `\u00e9` + 1234
    ([{"a": "\u2024 2024", "n": 2024}], "2024", [{"a": "\u2024 ***", "n": 2024}]),
    ([{"a": "a\\", "b": "x 2024"}], "2024", [{"a": "a\\", "b": "x ***"}]),
])
def test_mask_json_masks_strings_and_keys_and_nothing_else(rows: list[Any], secret: str, expected: list[Any]) -> None:
    masked = mask_json(json.dumps(rows), [secret])
    assert json.loads(masked) == expected


class RandomDocuments:
    """JSON documents full of near misses of one secret: in strings and keys, cut short, next to escapes (`\\n`,
    `\\u00e9`, `\\"`), and numbers and literals a secret of digits or `true` could be mistaken in."""

    ALPHABET = ("0", "2", "e", "u", "n", "t", "r", "a", '"', "\\", "\n", " ", ",", "é", "😀")

    def __init__(self, rng: random.Random, secret: str) -> None:
        self.rng, self.secret = rng, secret

    def chars(self, low: int, high: int) -> str:
        return "".join(self.rng.choice(self.ALPHABET) for _ in range(self.rng.randint(low, high)))

    def text(self) -> str:
        pieces = [self.secret, self.secret[1:], self.secret[:-1], self.chars(0, 3)]
        return "".join(self.rng.choice(pieces) for _ in range(self.rng.randint(0, 3)))

    def value(self, depth: int = 0) -> Any:
        kind = self.rng.randint(0, 4 if depth < 3 else 2)
        if kind <= 1:
            return self.text()
        if kind == 2:
            return self.rng.choice([20202, 2.02e20, 2020, True, False, None, 0.5])
        if kind == 3:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 3))]
        return {self.text(): self.value(depth + 1) for _ in range(self.rng.randint(0, 3))}


def test_mask_json_agrees_with_masking_the_decoded_rows_on_random_documents() -> None:
    rng = random.Random(13)
    for _ in range(4000):
        secret = rng.choice(["2020", "true", "0.e2", "ue00", 'nn\\"a', RandomDocuments(rng, "").chars(4, 6)])
        documents = RandomDocuments(rng, secret)
        document = [documents.value() for _ in range(rng.randint(1, 3))]
        expected = reference(document, needles([secret]))
        for ensure_ascii in (True, False):
            masked = json.loads(mask_json(json.dumps(document, ensure_ascii=ensure_ascii), [secret]))
            assert masked == expected, (document, secret, ensure_ascii)
            assert _numbers(masked) == _numbers(document)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _numbers(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [] if isinstance(value, str) else [value]


def test_secrets_shorter_than_the_minimum_are_not_searched_for() -> None:
    short = "x" * (defaults.SECRET_MASK_MIN_CHARS - 1)
    rows = json.dumps([{"a": f"{short} in xxxx"}])
    assert mask_json(rows, [short]) == rows
    assert mask_text(f"{short}!", [short]) == f"{short}!"
    assert mask_text(f"{short}x!", [short + "x"]) == "***!"


# --- the run context and the runner --------------------------------------------------------------------------

def test_a_job_that_echoes_its_secrets_keeps_none_of_them(
    echo_registry: Registry, fake_redis: fakeredis.FakeRedis, unit_config: Config, caplog: pytest.LogCaptureFixture,
) -> None:
    install_log_masking()
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=echo_registry).submit(
        echo_spec(fail_first=True, pin="482913"))["job_id"]
    runtime = Runtime(unit_config, fake_redis, echo_registry)
    store = JobStore(fake_redis, unit_config)
    handler = keep_platform_logs(fake_redis, store.keys)  # ctx.log lines onto the events, as in a worker
    try:
        with caplog.at_level(logging.INFO):
            with pytest.raises(JobFailedError):
                execute(job_id, runtime)               # attempt 1: a transient error quoting them, retried
            assert runtime.outcome is not None and runtime.outcome.status == "scheduled"
            assert enqueue_due_now(fake_redis, unit_config, job_id) == 1
            result = execute(job_id, runtime)          # attempt 2: finishes
    finally:
        logging.getLogger("platforms").removeHandler(handler)
    view = store.view(job_id, full=True)
    assert view is not None and view["status"] == "finished"
    secrets = [API_KEY, HEADER_KEY, AUTH.split()[1], session_of(API_KEY), "482913"]
    shown = json.dumps([view, store.events(job_id), result])
    contents = redis_contents(fake_redis)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for secret in secrets:
        assert secret not in shown and secret.encode() not in contents and secret not in logged, secret
    original = view["datasets"]["original"][0]
    assert original["auth"] == "Bearer ***" and original["session"] == "***" and original["pin"] == "***"
    assert original["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
    assert original["count"] == 2024                   # a number is not a string holding the pin
    assert original["nested"][0]["deep"] == {"***": ["***", "<***>"]}
    assert view["datasets"]["processed"][0] == {"key": "***", "***": "a key", "n": 0}
    assert view["checkpoint"] == {"cursor": "after ***", "key": "***"}
    assert view["progress"]["message"] == "signed in with ***"
    assert result["echo"]["auth"] == "Bearer ***" and view["result"] == result
    events = store.events(job_id)
    retry = next(e for e in events if e["type"] == "retry_scheduled")
    assert "503" in retry["error"]["message"] and "***" in retry["error"]["message"]
    lines = [event.get("message") for event in events]
    assert f"[echoing {job_id}] session *** for key ***" in lines
    assert "raw logger: ***" in logged
    assert view["settings"]["headers"] == {"Authorization": "***", "X-Api-Key": "***"}


STORAGE_ECHO = '''
"""Puts the password of its storage target in its dataset and its result."""
from collector.platform import Platform, Storage


class StorageEcho(Platform):
    """Echoes the storage password."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def _run(self, ctx):
        ctx.dataset("original", [{"dsn": f"vault://admin:{self.storage.password}@db", "pw": self.storage.password}])
        return {"pw": self.storage.password}
'''


def test_the_secret_of_a_storage_spec_is_masked_in_datasets_and_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
    fake_redis: fakeredis.FakeRedis, unit_config: Config,
) -> None:
    install_vault(monkeypatch, request)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.discover(make_package(tmp_path, "storageecho", storage_echo=STORAGE_ECHO))
    password = "vault-pw-3e4f5a6b7c"
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=registry).submit({
        "platform_id": "storage_echo", "settings": {"storage": {"type": "vault", "settings": {
            "url": "vault://db", "password": password}}}})["job_id"]
    assert execute(job_id, Runtime(unit_config, fake_redis, registry)) == {"pw": "***"}
    view = JobStore(fake_redis, unit_config).view(job_id, full=True)
    assert view is not None and view["datasets"]["original"] == [{"dsn": "vault://admin:***@db", "pw": "***"}]
    assert password.encode() not in redis_contents(fake_redis)


def test_add_secrets_masks_the_datasets_kept_before(fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    ctx = RunContext(job_id="j", platform_id="p", attempt=1, store=JobStore(fake_redis, unit_config), interval_s=10)
    ctx.dataset("original", [{"token": "late-secret-77"}])
    ctx.add_secrets(["late-secret-77"])
    try:
        ctx.dataset("processed", [{"again": "late-secret-77"}])
        assert {name: json.loads(kept.chunks(1000)[0]) for name, kept in ctx.datasets.items()} == {
            "original": [{"token": "***"}], "processed": [{"again": "***"}]}
    finally:
        ctx.release_secrets()


def test_a_checkpoint_holding_a_secret_comes_back_masked(fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    store = JobStore(fake_redis, unit_config)
    ctx = RunContext(job_id="j", platform_id="p", attempt=1, store=store, interval_s=10, secrets=["cp-secret-9"])
    ctx.checkpoint({"page": 3, "next": "https://api/x?key=cp-secret-9"})
    assert store.read("j", "checkpoint")["checkpoint"] == {"page": 3, "next": "https://api/x?key=***"}
    assert ctx.state == {"page": 3, "next": "https://api/x?key=***"}
    assert b"cp-secret-9" not in redis_contents(fake_redis)


# --- mappings of secrets -------------------------------------------------------------------------------------

class Headed:
    """A platform taking a mapping of secrets."""

    def __init__(self, url: str, headers: dict[str, Secret] | None = None) -> None:
        self.url, self.headers = url, headers

    def _run(self, ctx: Any) -> None:
        return None


def test_a_mapping_of_secrets_is_declared_loaded_and_described() -> None:
    schema = build_settings_schema(Headed, where="headed")
    headers = next(s for s in schema.settings if s.name == "headers")
    assert headers.describe() == {"name": "headers", "type": "object", "required": False, "default": None,
                                  "secret": True}
    loaded = schema.schema().load({"url": "u", "headers": {"X-Api-Key": "k-123456"}})
    assert loaded["headers"] == {"X-Api-Key": "k-123456"} and isinstance(loaded["headers"]["X-Api-Key"], Secret)
    assert repr(loaded["headers"]) == "{'X-Api-Key': Secret('***')}"


def test_a_mapping_of_secrets_needs_string_keys() -> None:
    class Wrong:
        def __init__(self, headers: dict[int, Secret]) -> None:
            self.headers = headers

    with pytest.raises(ContractError, match=r"dict\[str, Secret\]"):
        build_settings_schema(Wrong, where="wrong")


def test_a_mapping_of_secrets_is_sealed_whole_and_shown_key_by_key(registry: Registry) -> None:
    spec = validate_spec({"platform_id": "http_json", "settings": {
        "url": "https://api.example.com/x", "headers": {"Authorization": AUTH, "X-Api-Key": HEADER_KEY}}}, registry)
    masked, secrets = split_secrets(spec)
    assert masked["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
    assert secrets == {"headers": {"Authorization": AUTH, "X-Api-Key": HEADER_KEY}}
    assert merge_secrets(masked, secrets) == spec.settings
    assert secret_paths(spec) == [("headers", "Authorization"), ("headers", "X-Api-Key")]


def test_header_values_are_sealed_and_masked_through_the_api(
    client: Any, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    described = client.get("/platforms/get").get_json()
    http_json = next(p for p in described["platforms"] if p["id"] == "http_json")
    assert next(s for s in http_json["settings"] if s["name"] == "headers")["secret"] is True
    answer = client.post("/execution/run", json={"platform_id": "http_json", "settings": {
        "url": "https://api.example.com/x", "headers": {"Authorization": AUTH, "X-Api-Key": HEADER_KEY}}})
    assert answer.status_code == 202
    job_id = answer.get_json()["job_id"]
    view = client.get(f"/execution/get?job_id={job_id}&full").get_json()
    assert view["settings"]["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
    assert HEADER_KEY.encode() not in redis_contents(fake_redis) and AUTH.encode() not in redis_contents(fake_redis)
    sealed = fake_redis.hget(f"collector:job:{job_id}", "secrets")
    assert Sealer(unit_config.secret_key or "").unseal(sealed.decode())["headers"]["X-Api-Key"] == HEADER_KEY


def test_a_header_value_that_is_not_text_is_a_422_naming_it(client: Any, fake_redis: fakeredis.FakeRedis) -> None:
    answer = client.post("/execution/run", json={"platform_id": "http_json", "settings": {
        "url": "https://api.example.com/x", "headers": {"X-Api-Key": 123456789}}})
    assert answer.status_code == 422
    details = answer.get_json()["details"]
    assert any(path.startswith("settings.headers") for path in details), details
    assert "123456789" not in answer.get_data(as_text=True) and fake_redis.dbsize() == 0



STORE_ECHO = '''
"""Stores what its source answered, the source having echoed the job's key back (keys, values, nested, bytes)."""
from collector.platform import Platform, Secret, Storage


class StoreEcho(Platform):
    """Writes rows holding its api_key to its storage target, in two calls."""

    def __init__(self, api_key: Secret, storage: Storage) -> None:
        self.api_key, self.storage = api_key, storage

    def _run(self, ctx):
        key = self.api_key
        self.storage.write([{"auth": f"Bearer {key}", "n": 1, "raw": f"k={key}".encode()}])
        self.storage.write(iter([{"auth": "none", "n": 2, "nested": {key: [key, f"<{key}>"]}, "as_json": f'"{key}"'}]))
        return {"stored": self.storage.rows_written}
'''


@pytest.mark.parametrize("target", [{"type": "jsonl", "settings": {"path": "echo.jsonl"}},
                                    {"type": "sqlite", "settings": {"path": "echo.db", "table": "echo"}}])
def test_rows_a_source_echoed_a_secret_into_are_stored_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis, unit_config: Config,
    target: dict[str, Any],
) -> None:
    """A storage target is a dataset the service writes: what the source answered goes there with the job's secret
    values masked, as in the job's own datasets (stored raw, a second job could read it back in another spelling)."""
    import sqlite3

    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.discover(make_package(tmp_path, "storeecho", store_echo=STORE_ECHO))
    job_id = Submitter(connection=fake_redis, config=unit_config, registry=registry).submit({
        "platform_id": "store_echo", "settings": {"api_key": API_KEY, "storage": target}})["job_id"]
    assert execute(job_id, Runtime(unit_config, fake_redis, registry)) == {"stored": 2}
    written = Path(unit_config.data_dir) / target["settings"]["path"]
    if target["type"] == "jsonl":
        first, second = (json.loads(line) for line in written.read_text().splitlines())
        assert first["auth"] == "Bearer ***" and second["nested"] == {"***": ["***", "<***>"]}
    else:
        with contextlib.closing(sqlite3.connect(written)) as db:
            first, second = ({k: v for k, v in zip(["auth", "n", "raw"], row, strict=True)}
                             for row in db.execute("SELECT auth, n, raw FROM echo ORDER BY n"))
        assert first["auth"] == "Bearer ***" and first["raw"] == b"k=***"
    assert API_KEY.encode() not in written.read_bytes()
    assert second["auth"] == "none" and second["n"] == 2
