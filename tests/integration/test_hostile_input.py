"""Hostile request bodies and job ids get a clear 4xx JSON error, and Redis sees no write at all."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import redis

from tests.conftest import ServedApp

WRITES = ("hset", "set", "setex", "lpush", "rpush", "zadd", "xadd", "sadd", "expire", "multi", "exec", "del",
          "hincrby", "incr", "lmove", "rpoplpush")


def write_count(client: redis.Redis) -> int:
    """How many write commands Redis has executed since it started (from INFO commandstats)."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in WRITES)


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return value


DEMO = {"platform_id": "demo", "settings": {"rows": 1}}
BODIES = {
    "not json": (b"{not json", "application/json", 400, "not valid JSON"),
    "invalid utf-8": (b'{"platform_id": "d\xffemo"}', "application/json", 400, "UTF-8"),
    "text/plain": (json.dumps(DEMO).encode(), "text/plain", 400, "Content-Type"),
    "form": (b"platform_id=demo", "application/x-www-form-urlencoded", 400, "Content-Type"),
    "array": (b"[1, 2]", "application/json", 422, "JSON object"),
    "string": (b'"demo"', "application/json", 422, "JSON object"),
    "null": (b"null", "application/json", 422, "JSON object"),
    "nan": (b'{"platform_id": "demo", "settings": {"delay_s": NaN}}', "application/json", 400, "NaN"),
    "infinity": (b'{"platform_id": "demo", "settings": {"delay_s": Infinity}}', "application/json", 400,
                 "Infinity"),
    "-infinity": (b'{"platform_id": "demo", "settings": {"delay_s": -Infinity}}', "application/json", 400,
                  "Infinity"),
    "float overflow": (b'{"platform_id": "demo", "settings": {"delay_s": 1e400}}', "application/json", 400,
                       "overflows"),
    "int 2**63": (json.dumps({"platform_id": "demo", "settings": {"rows": 2**63}}).encode(), "application/json",
                  400, "out of range"),
    "int -2**63-1": (json.dumps({"platform_id": "demo", "settings": {"rows": -(2**63) - 1}}).encode(),
                     "application/json", 400, "out of range"),
    "int of 5000 digits": (b'{"platform_id": "demo", "settings": {"rows": ' + b"9" * 5000 + b"}}",
                           "application/json", 400, "too long"),
    "depth 33": (json.dumps({**DEMO, "extra": nested(33)}).encode(), "application/json", 400, "nested deeper"),
    "depth 100000": (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", 400, "nested"),
    "long string": (json.dumps({**DEMO, "_id": "x" * 65_537}).encode(), "application/json", 400, "65537"),
    "long key": (json.dumps({"platform_id": "demo", "settings": {"k" * 70_000: 1}}).encode(), "application/json",
                 400, "key"),
    "duplicate key": (b'{"platform_id": "demo", "platform_id": "demo"}', "application/json", 400, "twice"),
    "unknown field": (json.dumps({**DEMO, "priority": 1}).encode(), "application/json", 422, "error(s)"),
    "unknown setting": (json.dumps({"platform_id": "demo", "settings": {"colour": "red"}}).encode(),
                        "application/json", 422, "error(s)"),
    "over 1 MiB": (json.dumps({**DEMO, "_id": "x" * (1024 * 1024)}).encode(), "application/json", 413, "bytes"),
}


@pytest.mark.parametrize("case", list(BODIES))
def test_hostile_bodies_are_refused_and_nothing_is_written(
    served: ServedApp, redis_client: redis.Redis, case: str
) -> None:
    raw, content_type, status, needle = BODIES[case]
    before = write_count(redis_client)
    code, body = served.request("POST", "/execution/run", raw=raw, headers={"Content-Type": content_type})
    assert code == status, body
    assert set(body) == {"error", "message", "details"}, body
    assert needle in body["message"], body["message"]
    assert write_count(redis_client) == before and redis_client.dbsize() == 0


def test_depth_32_is_the_limit_not_33(served: ServedApp) -> None:
    code, body = served.request("POST", "/execution/run", {**DEMO, "extra": nested(32)})
    assert code == 422 and "extra" in body["details"]  # parsed, then refused as an unknown field


@pytest.mark.parametrize("job_id", [
    "*", "collector:job:*", "a:b", "../x", "..%2Fx", "a/b", "%00", "a b", "é", "x" * 10_000, "rq:job:1",
    "job%0d%0aSET x y",
])
def test_job_ids_that_are_not_ids_are_refused(served: ServedApp, redis_client: redis.Redis, job_id: str) -> None:
    from urllib.parse import quote

    redis_client.set("marker", "1")
    before = write_count(redis_client)
    code, body = served.request("GET", f"/execution/get?job_id={quote(job_id, safe='%')}")
    assert code == 400 and body["error"] == "bad_request", body
    assert "not a job id" in body["message"]
    assert write_count(redis_client) == before and redis_client.keys("*") == [b"marker"]


@pytest.mark.parametrize("platform_id", [
    "os.path", "../x", "..", "platforms.demo", "demo.Demo", "collector.runner", "__init__", "_private",
    "os", "subprocess", "demo/../demo", "builtins.eval",
])
def test_platform_ids_are_data_never_imported(
    served: ServedApp, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, platform_id: str
) -> None:
    imported: list[str] = []
    real_import = importlib.import_module

    def recording(name: str, package: str | None = None) -> object:
        imported.append(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", recording)
    modules_before = set(sys.modules)
    code, body = served.request("POST", "/execution/run", {"platform_id": platform_id, "settings": {}})
    assert code == 422 and "platform_id" in body["details"], body
    assert imported == [] and set(sys.modules) - modules_before == set()
    assert redis_client.dbsize() == 0
