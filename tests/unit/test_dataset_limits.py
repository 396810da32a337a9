"""Datasets a job keeps in Redis are capped (rows, bytes) and flagged when cut; `full` answers a page at a time."""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient
from redis.connection import AbstractConnection

from collector import defaults
from collector.app import create_app
from collector.cli.client import Client
from collector.config import Config
from collector.run.context import RunContext
from collector.run.runner import Runtime, execute
from collector.specs.registry import Registry
from collector.store.datasets import keep_rows
from collector.store.records import JobStore
from collector.submit.submitter import Submitter
from tests.unit.conftest import SECRET_KEY as KEY


def run_demo(fake_redis: fakeredis.FakeRedis, config: Config, registry: Registry, rows: int) -> str:
    submitter = Submitter(connection=fake_redis, config=config, registry=registry)
    job_id = submitter.submit({"platform_id": "demo", "settings": {"rows": rows}})["job_id"]
    execute(job_id, Runtime(config, fake_redis, registry, worker_name="w1"))
    return job_id


def dataset_bytes(fake_redis: fakeredis.FakeRedis, job_id: str) -> int:
    return sum(len(fake_redis.get(key) or b"") for key in fake_redis.keys(f"collector:job:{job_id}:dataset:*"))


OVERSIZED = 25_000  # rows: the attack asked for 1,000,000 (tests/integration/test_limits_live.py does)


@pytest.fixture(scope="module")
def oversized() -> Any:
    """The attack, scaled down and run once for this module: one 60-byte request (`demo`, rows: 1000000) kept
    159 MB in Redis for 7 days. Returns the fake Redis, the config, the job id and the log lines of the run."""
    connection = fakeredis.FakeRedis()
    config = Config(secret_key=KEY, progress_interval_s=0.05)
    handler = logging.handlers.BufferingHandler(1000)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        job_id = run_demo(connection, config, Registry.discover("platforms"), OVERSIZED)
    finally:
        logging.getLogger().removeHandler(handler)
    yield connection, config, job_id, [r.getMessage() for r in handler.buffer]
    connection.close()


def test_a_job_over_the_row_cap_keeps_a_flagged_sample_not_the_whole_dataset(oversized: Any) -> None:
    connection, config, job_id, logged = oversized
    view = JobStore(connection, config).view(job_id)
    assert view is not None and view["status"] == "finished" and view["result"] == {"rows": OVERSIZED}
    for name in ("original", "processed"):
        kept = view["datasets"][name]
        assert kept["rows"] == defaults.DATASET_MAX_ROWS and kept["total_rows"] == OVERSIZED
        assert kept["truncated"] is True and kept["bytes"] <= defaults.DATASET_MAX_BYTES
    stored = dataset_bytes(connection, job_id)
    assert stored <= sum(view["datasets"][name]["bytes"] for name in ("original", "processed")) + 100
    warned = [line for line in logged if "keeps its first" in line]
    assert len(warned) == 2 and "COLLECTOR_DATASET_MAX_ROWS=10000" in warned[0] and job_id in warned[0]


def test_full_on_an_oversized_job_answers_one_bounded_page(oversized: Any, registry: Registry) -> None:
    # The attack: `full` on the million-row job answered 79 MB and took the API from 96 MB to 823 MB.
    connection, config, job_id, _ = oversized
    client = create_app(config, connection=connection, registry=registry, dashboard=False).test_client()
    response = client.get(f"/execution/get?job_id={job_id}&full")
    assert response.status_code == 200 and len(response.data) < 200_000
    body = response.get_json()
    assert [row["n"] for row in body["datasets"]["original"]] == list(range(1, defaults.FULL_PAGE_ROWS + 1))
    page = body["datasets_page"]
    assert page["offset"] == 0 and page["limit"] == defaults.FULL_PAGE_ROWS
    assert page["next_offset"] == defaults.FULL_PAGE_ROWS
    assert page["next"] == f"/execution/get?job_id={job_id}&full=1&offset=1000&limit=1000"
    assert page["kept"]["original"]["truncated"] is True and page["kept"]["original"]["total_rows"] == OVERSIZED
    last = client.get(f"/execution/get?job_id={job_id}&full&offset=9900&limit=1000").get_json()
    assert [row["n"] for row in last["datasets"]["processed"]] == list(range(9901, 10_001))
    assert last["datasets_page"]["next_offset"] is None and last["datasets_page"]["next"] is None
    biggest = client.get(f"/execution/get?job_id={job_id}&full&limit={defaults.FULL_PAGE_MAX_ROWS}")
    assert len(biggest.data) < 2 * 1024 * 1024, "the largest page is bounded too"


def test_the_bytes_cap_cuts_a_dataset_of_wide_rows(
    fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    ctx = RunContext(job_id="j", platform_id="demo", attempt=1, store=JobStore(fake_redis, unit_config),
                     interval_s=1.0, dataset_max_rows=1000, dataset_max_bytes=10_000)
    ctx.dataset("original", ({"text": "x" * 990} for _ in range(50)))  # a generator: counted, not listed
    kept = ctx.datasets["original"]
    assert kept.cut_by == "bytes" and len(kept.rows) == 9 and kept.total_rows == 50
    assert kept.summary() == {"rows": 9, "bytes": kept.size, "total_rows": 50, "truncated": True}
    assert kept.size <= 10_000 and kept.size == len(json.dumps([{"text": "x" * 990}] * 9))


def test_rows_past_the_cap_are_never_serialized() -> None:
    class Exploding(dict):
        def __iter__(self) -> Any:
            raise AssertionError("a row past the cap was serialized")

    kept = keep_rows([{"n": 1}, {"n": 2}, Exploding(), Exploding()], max_rows=2, max_bytes=1000)
    assert kept.rows == [b'{"n": 1}', b'{"n": 2}'] and kept.total_rows == 4 and kept.cut_by == "rows"
    whole = keep_rows([{"n": 1}], max_rows=1, max_bytes=1000)
    assert not whole.truncated and whole.summary() == {"rows": 1, "bytes": 10}


def test_pages_cross_chunk_boundaries_and_read_only_their_chunks(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = run_demo(fake_redis, unit_config, registry, 2500)
    assert len(fake_redis.keys(f"collector:job:{job_id}:dataset:original*")) == 3  # 1000 + 1000 + 500 rows
    store = JobStore(fake_redis, unit_config)
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, *args: Any, **kwargs: Any) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else command)
        original(self, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    view = store.view(job_id, full=True, offset=900, limit=300)
    monkeypatch.setattr(AbstractConnection, "send_packed_command", original)
    assert view is not None and len(sent) == 1, "the record and the page's chunks in one round trip"
    assert b"dataset:original:2" not in sent[0], "a chunk the page does not touch is not read"
    assert [row["n"] for row in view["datasets"]["original"]] == list(range(901, 1201))
    assert view["datasets"]["processed"][0] == {"n": 901, "value": 901 * 901, "even": False}
    assert view["datasets_page"]["next_offset"] == 1200
    tail = client.get(f"/execution/get?job_id={job_id}&full&offset=2400&limit=500").get_json()
    assert len(tail["datasets"]["original"]) == 100 and tail["datasets_page"]["next"] is None
    beyond = client.get(f"/execution/get?job_id={job_id}&full&offset=5000").get_json()
    assert beyond["datasets"] == {"original": [], "processed": []}


def test_a_record_written_before_chunks_still_pages(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    job_id = run_demo(fake_redis, unit_config, registry, 1500)
    store = JobStore(fake_redis, unit_config)
    rows = [{"n": n} for n in range(1, 1501)]
    for name in ("original", "processed"):  # what an older version wrote: every row in one key
        fake_redis.delete(*fake_redis.keys(f"collector:job:{job_id}:dataset:{name}*"))
        fake_redis.set(store.keys.dataset(job_id, name), json.dumps(rows))
    first = store.view(job_id, full=True, offset=0, limit=10)
    later = store.view(job_id, full=True, offset=1490, limit=100)
    assert first is not None and later is not None
    assert [r["n"] for r in first["datasets"]["original"]] == list(range(1, 11))
    assert [r["n"] for r in later["datasets"]["original"]] == list(range(1491, 1501))


@pytest.mark.parametrize(
    ("query", "field"),
    [("&full&limit=0", "limit"), ("&full&limit=10001", "limit"), ("&full&limit=x", "limit"),
     ("&full&offset=-1", "offset"), ("&full&offset=1e3", "offset"), ("&offset=10", "offset")],
)
def test_bad_page_parameters_are_a_clear_400(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry, query: str,
    field: str,
) -> None:
    job_id = run_demo(fake_redis, unit_config, registry, 3)
    response = client.get(f"/execution/get?job_id={job_id}{query}")
    body = response.get_json()
    assert response.status_code == 400 and field in body["details"] and field in body["message"]


def test_the_page_maximum_is_a_setting(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                       registry: Registry) -> None:
    config = dataclasses.replace(unit_config, full_page_max_rows=50)
    client = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    job_id = run_demo(fake_redis, config, registry, 120)
    assert client.get(f"/execution/get?job_id={job_id}&full&limit=51").status_code == 400
    page = client.get(f"/execution/get?job_id={job_id}&full").get_json()
    assert len(page["datasets"]["original"]) == 50 and page["datasets_page"]["next_offset"] == 50


def test_the_caps_are_settings_and_a_small_dataset_is_kept_whole(
    fake_redis: fakeredis.FakeRedis, unit_config: Config, registry: Registry
) -> None:
    config = dataclasses.replace(unit_config, dataset_max_rows=5)
    job_id = run_demo(fake_redis, config, registry, 8)
    view = JobStore(fake_redis, config).view(job_id, full=True)
    assert view is not None and [r["n"] for r in view["datasets"]["original"]] == [1, 2, 3, 4, 5]
    assert view["datasets_page"]["kept"]["original"] == {
        "rows": 5, "bytes": view["datasets_page"]["kept"]["original"]["bytes"], "total_rows": 8, "truncated": True}
    whole = run_demo(fake_redis, unit_config, registry, 8)
    assert JobStore(fake_redis, unit_config).view(whole)["datasets"]["original"] == {  # type: ignore[index]
        "rows": 8, "bytes": len(json.dumps([{"n": n, "value": n * n} for n in range(1, 9)]))}


def test_the_client_reads_every_page_into_one_view(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = {0: ([1, 2], 2), 2: ([3, 4], 4), 4: ([5], None)}
    asked: list[dict[str, Any]] = []

    def answer(self: Client, method: str, path: str, *, params: dict[str, Any] | None = None,
               body: Any = None) -> dict[str, Any]:
        asked.append(dict(params or {}))
        rows, following = pages[int((params or {}).get("offset", 0))]
        return {"job_id": "j", "datasets": {"original": [{"n": n} for n in rows]},
                "datasets_page": {"offset": 0, "limit": 2, "next_offset": following, "kept": {}}}

    monkeypatch.setattr(Client, "request", answer)
    view = Client("http://127.0.0.1:1").get("j", full=True)
    assert [row["n"] for row in view["datasets"]["original"]] == [1, 2, 3, 4, 5]
    assert [a.get("offset") for a in asked] == [None, 2, 4] and view["datasets_page"]["next_offset"] is None


def test_submit_wait_says_a_dataset_was_cut() -> None:
    from collector.cli.display import summary

    shown = summary({"job_id": "j", "status": "finished", "platform_id": "demo", "datasets": {
        "original": {"rows": 10000, "bytes": 250000, "total_rows": 1000000, "truncated": True}}})
    assert "original: 10,000 rows, 250,000 bytes (the first of 1,000,000; the rest was not kept)" in shown
