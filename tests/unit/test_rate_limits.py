"""Rate limits: how they are written, the Redis buckets (on fakeredis with Lua), and where they are declared."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from collector.app import create_app
from collector.config import Config
from collector.errors import ConfigError
from collector.rates import Rate, connection_bucket, parse_rate, platform_bucket
from collector.resources import connections
from collector.specs.registry import Registry
from collector.store.buckets import Buckets
from collector.store.records import Keys
from tests.unit.conftest import SECRET_KEY

TEN = parse_rate("10/s")


@pytest.mark.parametrize(("text", "count", "per_s"), [
    ("10/s", 10, 1), ("600/min", 600, 60), ("5000/h", 5000, 3600), ("0.5/s", 0.5, 1), (" 3 / second ", 3, 1),
    ("2/MIN", 2, 60), ("1/hour", 1, 3600),
])
def test_a_rate_is_a_count_per_second_minute_or_hour(text: str, count: float, per_s: float) -> None:
    rate = parse_rate(text)
    assert (rate.count, rate.per_s) == (count, per_s)
    assert rate.interval_s == pytest.approx(per_s / count)
    assert str(rate) == text.strip()


@pytest.mark.parametrize(("value", "said"), [
    ("10", "is not a rate"), ("10/d", "is not a rate"), ("ten/s", "is not a rate"), ("-1/s", "is not a rate"),
    ("0/s", "allows nothing"), ("100000/s", "between one a day"), ("1/h5", "is not a rate"),
    (10, "write it as text"), (None, "write it as text"),
])
def test_a_bad_rate_says_how_to_write_one(value: object, said: str) -> None:
    with pytest.raises(ValueError, match=said) as caught:
        parse_rate(value)
    assert '"10/s", "600/min" or "5000/h"' in str(caught.value) or said in ("allows nothing", "between one a day")


@pytest.fixture
def buckets() -> Iterator[Buckets]:
    client = fakeredis.FakeRedis()
    yield Buckets(client, Keys("collector"))
    client.close()


def test_a_bucket_spaces_turns_evenly_in_the_order_asked(buckets: Buckets) -> None:
    waits = [buckets.take({"platform:a": TEN}, max_wait_s=60, now=100.0)[1] for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert buckets.next_free("platform:a") == pytest.approx(100.5)
    # Past the reserved turns, the next caller goes at once.
    assert buckets.take({"platform:a": TEN}, max_wait_s=60, now=101.0) == (True, 0.0)


def test_buckets_are_apart_by_name(buckets: Buckets) -> None:
    buckets.take({"platform:a": TEN}, max_wait_s=60, now=100.0)
    assert buckets.take({"platform:b": TEN}, max_wait_s=60, now=100.0) == (True, 0.0)
    assert buckets.take({"platform:a": TEN}, max_wait_s=60, now=100.0)[1] == pytest.approx(0.1)


def test_one_turn_of_two_buckets_waits_for_the_slower(buckets: Buckets) -> None:
    one = parse_rate("1/s")
    buckets.take({"connection:c": one}, max_wait_s=60, now=100.0)
    granted, wait = buckets.take({"platform:a": TEN, "connection:c": one}, max_wait_s=60, now=100.0)
    assert granted and wait == pytest.approx(1.0)
    # Both buckets reserved from the turn taken: the platform's next token is a tenth of a second after it.
    assert buckets.next_free("platform:a") == pytest.approx(101.1)
    assert buckets.next_free("connection:c") == pytest.approx(102.0)


def test_a_turn_too_far_off_is_not_taken(buckets: Buckets) -> None:
    slow = parse_rate("1/min")
    assert buckets.take({"platform:a": slow}, max_wait_s=30, now=100.0) == (True, 0.0)
    granted, wait = buckets.take({"platform:a": slow}, max_wait_s=30, now=100.0)
    assert not granted and wait == pytest.approx(60.0)
    assert buckets.next_free("platform:a") == pytest.approx(160.0)   # nothing reserved


def test_a_back_off_empties_the_bucket_until_its_end_then_it_refills_at_its_rate(buckets: Buckets) -> None:
    buckets.take({"platform:a": TEN}, max_wait_s=60, now=100.0)
    assert buckets.back_off(["platform:a"], 5.0, now=100.0) == pytest.approx(105.0)
    waits = [buckets.take({"platform:a": TEN}, max_wait_s=60, now=101.0)[1] for _ in range(3)]
    assert waits == pytest.approx([4.0, 4.1, 4.2])
    # A shorter back-off later does not bring the turn forward.
    buckets.back_off(["platform:a"], 1.0, now=101.0)
    assert buckets.next_free("platform:a") == pytest.approx(105.3)
    # Turns reserved before the back-off are held back while it lasts.
    assert buckets.held_for(["platform:b", "platform:a"], now=101.0) == pytest.approx(4.0)
    assert buckets.held_for(["platform:a"], now=105.0) == 0.0
    assert buckets.held_for([]) == 0.0


def test_a_bucket_at_rest_expires(buckets: Buckets) -> None:
    buckets.take({"platform:a": TEN}, max_wait_s=60)
    ttl_ms = buckets.connection.pttl("collector:bucket:platform:a")
    assert 0 < ttl_ms <= 1100
    assert buckets.take({}, max_wait_s=60) == (True, 0.0)


def test_bucket_names_say_whose_they_are() -> None:
    assert platform_bucket("partner") == "platform:partner"
    assert platform_bucket("partner", "acct-7") == "platform:partner:acct-7"
    assert connection_bucket("api") == "connection:api"
    assert Keys("collector").bucket("platform:partner") == "collector:bucket:platform:partner"


# -- where limits are declared


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    root = tmp_path / "ratedplatforms"
    root.mkdir()
    (root / "__init__.py").write_text("")
    source = '"""{doc}."""\nfrom collector.platform import Platform\n\n\nclass {name}(Platform):\n' \
             '    """{doc}."""\n\n    RATE_LIMIT = {limit}\n\n    def _run(self, ctx):\n        return None\n'
    for module, name, limit in (("quick", "Quick", '"600/min"'), ("badly", "Badly", '"10 per second"'),
                                ("numeric", "Numeric", "10"), ("unlimited", "Unlimited", "None")):
        (root / f"{module}.py").write_text(source.format(doc=f"{name} things", name=name, limit=limit))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "ratedplatforms"
    for name in [m for m in sys.modules if m.startswith("ratedplatforms")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_a_platform_with_a_bad_rate_limit_is_broken_with_the_reason(package: str) -> None:
    registry = Registry.discover(package)
    assert sorted(registry.platforms) == ["quick", "unlimited"]
    assert registry.platforms["quick"].rate_limit == Rate(600.0, 60.0, "600/min")
    assert registry.platforms["unlimited"].rate_limit is None
    assert registry.broken["badly"] == (
        "ContractError: platforms/badly.py: Badly.RATE_LIMIT = '10 per second' is not a rate; write a number of "
        'requests, \'/\', and s, min or h: "10/s", "600/min" or "5000/h"')
    assert "Numeric.RATE_LIMIT = 10 is not a rate; write it as text" in registry.broken["numeric"]


def test_platforms_get_shows_each_platform_s_rate_limit(package: str, tmp_path: Path) -> None:
    path = tmp_path / "connections.toml"
    path.write_text('[api]\nkind = "http"\nbase_url = "https://api.example"\nrate_limit = "5/s"\n'
                    '[plain]\nkind = "http"\nbase_url = "https://plain.example"\n')
    config = Config(secret_key=SECRET_KEY, platforms_package=package, connections=str(path))
    app = create_app(config, connection=fakeredis.FakeRedis(), registry=Registry.discover(package), dashboard=False)
    body = app.test_client().get("/platforms/get").get_json()
    limits = {p["id"]: p["rate_limit"] for p in body["platforms"]}
    assert limits == {"quick": "600/min", "unlimited": None}
    assert "RATE_LIMIT" in body["broken"]["badly"]
    assert {"name": "api", "kind": "http", "rate_limit": "5/s"} in body["connections"]
    assert {"name": "plain", "kind": "http"} in body["connections"]


def test_an_http_connection_takes_a_rate_limit(tmp_path: Path) -> None:
    path = tmp_path / "connections.toml"
    path.write_text('[api]\nkind = "http"\nbase_url = "https://api.example/v1"\nrate_limit = "120/min"\n')
    found = connections.load(str(path), environ={}, secret_key=SECRET_KEY)
    assert found["api"].rate_limit == parse_rate("120/min")
    client = found["api"].http_client()
    assert client.rate_buckets == {"connection:api": parse_rate("120/min")}


@pytest.mark.parametrize(("entry", "said"), [
    ('kind = "http"\nbase_url = "https://api.example"\nrate_limit = "fast"', "rate_limit = 'fast' is not a rate"),
    ('kind = "http"\nbase_url = "https://api.example"\nrate_limit = 5', "rate_limit = 5 is not a rate"),
    ('kind = "database"\nurl = "sqlite:///x.db"\nrate_limit = "5/s"', "unknown key(s) rate_limit"),
])
def test_a_bad_connection_rate_limit_stops_start_up_naming_the_entry(tmp_path: Path, entry: str, said: str) -> None:
    path = tmp_path / "connections.toml"
    path.write_text(f"[api]\n{entry}\n")
    with pytest.raises(ConfigError, match="connection 'api'") as caught:
        connections.load(str(path), environ={}, secret_key=SECRET_KEY)
    assert said in caught.value.message
