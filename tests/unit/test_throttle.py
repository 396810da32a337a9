"""A job's throttle: waits for tokens (cancel and lease honoured), `ctx.throttle`, the HTTP client and 429 back-off."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector import rates
from collector.config import Config
from collector.errors import JobCancelledError, LeaseLostError, RateWaitError, TransientError
from collector.http_client import HttpClient
from collector.rates import parse_rate
from collector.run.context import RunContext
from collector.run.runner import Runtime, execute
from collector.run.throttle import JobThrottle
from collector.specs.registry import Registry
from collector.store import metrics
from collector.store.buckets import Buckets
from collector.store.records import JobStore, Keys
from collector.submit.submitter import Submitter
from tests.local_server import LocalServer, json_answer
from tests.unit.test_metrics import samples

TEN = parse_rate("10/s")
log = logging.getLogger("tests.throttle")


@pytest.fixture
def buckets(fake_redis: fakeredis.FakeRedis) -> Buckets:
    return Buckets(fake_redis, Keys("collector"))


def throttle(buckets: Buckets, *, own: dict[str, Any] | None = None, max_wait_s: float = 60.0,
             interrupt: Any = lambda: None) -> JobThrottle:
    return JobThrottle(buckets, own=own or {}, max_wait_s=max_wait_s, interrupt=interrupt, log=log, redis_wait_s=1.0)


def test_takes_wait_their_turn_in_the_worker(buckets: Buckets) -> None:
    job = throttle(buckets, own={"platform:a": TEN})
    started = time.monotonic()
    for _ in range(4):
        job.take({})
    assert time.monotonic() - started >= 0.29          # 0, 0.1, 0.2, 0.3
    assert 0.2 <= job.waited_s <= 0.31                  # each a tenth of a second after the last, less the calls


def test_a_request_takes_the_job_s_buckets_and_its_own(buckets: Buckets) -> None:
    job = throttle(buckets, own={"platform:a": TEN})
    assert job.take({"connection:c": parse_rate("1/s")}) == ["platform:a", "connection:c"]
    assert buckets.next_free("connection:c") is not None and buckets.next_free("platform:a") is not None
    assert throttle(buckets).take({}) == []


def test_a_cancel_stops_the_wait_at_once(buckets: Buckets) -> None:
    asked = time.monotonic() + 0.3

    def interrupt() -> None:
        if time.monotonic() > asked:
            raise JobCancelledError("cancelled")

    buckets.back_off(["platform:a"], 30.0)
    started = time.monotonic()
    with pytest.raises(JobCancelledError):
        throttle(buckets, own={"platform:a": TEN}, interrupt=interrupt).take({})
    assert time.monotonic() - started < 1.0


def test_a_turn_reserved_before_a_back_off_is_not_used_while_it_lasts(buckets: Buckets) -> None:
    buckets.take({"platform:a": TEN}, max_wait_s=60)
    early = throttle(buckets, own={"platform:a": TEN})
    backed_off = False

    def sleep(seconds: float) -> None:   # while the early job sleeps for its turn, a source answers 429
        nonlocal backed_off
        if not backed_off:
            backed_off = True
            buckets.back_off(["platform:a"], 0.5)
        time.sleep(seconds)

    early.sleep = sleep
    started = time.monotonic()
    assert early.take({}) == ["platform:a"]
    assert time.monotonic() - started >= 0.45 and early.waited_s >= 0.4
    assert buckets.held_for(["platform:a"]) == 0.0


def test_a_turn_further_off_than_the_longest_wait_is_a_transient_error(buckets: Buckets) -> None:
    buckets.back_off(["platform:a"], 120.0)
    with pytest.raises(RateWaitError) as caught:
        throttle(buckets, own={"platform:a": TEN}, max_wait_s=30.0).take({})
    assert isinstance(caught.value, TransientError)
    assert "platform:a (10/s) has its next token in 120 s" in caught.value.message
    assert "COLLECTOR_RATE_MAX_WAIT_S=30 s" in caught.value.message


# -- ctx.throttle


@pytest.fixture
def ctx(fake_redis: fakeredis.FakeRedis, unit_config: Config, buckets: Buckets) -> RunContext:
    context = RunContext(job_id="j", platform_id="partner", attempt=1, store=JobStore(fake_redis, unit_config),
                         interval_s=10.0)
    context.rate_limit = TEN
    context.throttler = throttle(buckets, own={"platform:partner": TEN}, interrupt=context.stop_if_cancelled)
    return context


def test_ctx_throttle_takes_the_platform_s_bucket_or_a_key_s(ctx: RunContext, buckets: Buckets) -> None:
    assert ctx.throttle() == 0.0
    assert ctx.throttle() == pytest.approx(0.1, abs=0.02)
    assert ctx.throttle("acct-7") == 0.0                          # a bucket of its own
    assert ctx.throttle("acct-7", rate="2/s") == pytest.approx(0.1, abs=0.02)  # reserved at 10/s by the first
    assert buckets.next_free("platform:partner:acct-7") is not None


@pytest.mark.parametrize(("key", "rate", "said"), [
    ("has space", None, "ctx.throttle key 'has space' must be"), ("", None, "must be 1-64"),
    (None, "fast", "ctx.throttle rate: 'fast' is not a rate"),
])
def test_ctx_throttle_refuses_a_bad_key_or_rate(ctx: RunContext, key: Any, rate: Any, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        ctx.throttle(key, rate=rate)


def test_ctx_throttle_needs_a_rate_limit_or_a_rate(ctx: RunContext) -> None:
    ctx.rate_limit = None
    with pytest.raises(ValueError, match="platform 'partner' has no RATE_LIMIT; set one on its class or give rate="):
        ctx.throttle()
    assert ctx.throttle(rate="5/s") == 0.0


def test_ctx_throttle_stops_for_a_cancel_or_a_lost_lease(ctx: RunContext, buckets: Buckets) -> None:
    buckets.back_off(["platform:partner"], 30.0)
    ctx.cancel()
    with pytest.raises(JobCancelledError):
        ctx.throttle()

    class Lost:
        lost = "taken"

    ctx.lease = Lost()  # type: ignore[assignment]
    with pytest.raises(LeaseLostError):
        ctx.throttle()


def test_outside_a_worker_ctx_throttle_never_waits(fake_redis: fakeredis.FakeRedis, unit_config: Config) -> None:
    local = RunContext(job_id="j", platform_id="partner", attempt=1, store=JobStore(fake_redis, unit_config),
                       interval_s=10.0)
    assert local.throttle(rate="1/h") == 0.0 and local.throttle(rate="1/h") == 0.0


# -- the HTTP client


@pytest.fixture
def installed(buckets: Buckets) -> Iterator[JobThrottle]:
    job = throttle(buckets, own={"platform:a": TEN})
    with rates.installed(job):
        yield job


def test_the_http_client_takes_a_token_per_request(local_server: LocalServer, installed: JobThrottle,
                                                   buckets: Buckets) -> None:
    arrived: list[float] = []
    local_server.route("/items", lambda seen, n: (arrived.append(time.monotonic()), json_answer({}))[1])
    client = HttpClient(headers={}, secrets=[], rate_buckets={"connection:c": TEN})
    started = time.monotonic()
    for _ in range(4):
        client.request(local_server.url("/items"))
    assert len(arrived) == 4 and arrived[-1] - started >= 0.29     # the fourth turn is 0.3 s after the first
    assert buckets.next_free("connection:c") is not None


@pytest.mark.parametrize("status", [429, 503])
def test_a_429_with_retry_after_backs_the_bucket_off_for_everyone(local_server: LocalServer, installed: JobThrottle,
                                                                  buckets: Buckets, status: int) -> None:
    arrived: list[float] = []

    def answer(seen: Any, n: int) -> Any:
        arrived.append(time.monotonic())
        return json_answer({"error": "slow down"}, status, {"Retry-After": "1"}) if n == 0 else json_answer({})

    local_server.route("/limited", answer)
    slept: list[float] = []
    client = HttpClient(headers={}, secrets=[], sleep=slept.append)
    client.request(local_server.url("/limited"))
    assert arrived[1] - arrived[0] >= 0.95                  # the bucket held the retry back, not the client's sleep
    assert slept == []
    # The retry took the first turn at the back-off's end; every other job of any pool comes after it.
    hold_until = int(buckets.connection.get("collector:bucket:platform:a:hold")) / 1e6
    assert buckets.next_free("platform:a") == pytest.approx(hold_until + 0.1)


@pytest.mark.parametrize(("status", "headers"), [(429, {}), (500, {"Retry-After": "1"})])
def test_other_answers_leave_the_bucket_alone(local_server: LocalServer, installed: JobThrottle, buckets: Buckets,
                                              status: int, headers: dict[str, str]) -> None:
    local_server.route("/flaky", lambda seen, n: json_answer({}, status, headers) if n == 0 else json_answer({}))
    slept: list[float] = []
    HttpClient(headers={}, secrets=[], sleep=slept.append, backoff_s=0.01).request(local_server.url("/flaky"))
    assert len(slept) == 1                                  # the client's own pause, as before
    assert buckets.connection.exists("collector:bucket:platform:a:hold") == 0


def test_without_a_throttle_the_client_sleeps_as_asked(local_server: LocalServer) -> None:
    local_server.route("/limited", lambda seen, n: json_answer({}, 503, {"Retry-After": "2"}) if n == 0
                       else json_answer({}))
    slept: list[float] = []
    HttpClient(headers={}, secrets=[], sleep=slept.append).request(local_server.url("/limited"))
    assert slept == [2.0]


# -- a job, run by the runner


def test_a_platform_s_jobs_keep_to_its_rate_limit(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                                  local_server: LocalServer, client: FlaskClient) -> None:
    arrived: list[float] = []
    local_server.route("/paced", lambda seen, n: (arrived.append(time.monotonic()), json_answer({}))[1])
    registry = Registry.discover("tests.paced_platforms")
    config = dataclasses.replace(unit_config, egress_allow="127.0.0.1")   # the runtime installs its egress policy
    submitter = Submitter(connection=fake_redis, config=config, registry=registry)
    runtime = Runtime(config, fake_redis, registry)
    started = time.monotonic()
    for _ in range(2):
        job_id = submitter.submit({"platform_id": "paced", "settings": {
            "url": local_server.url("/paced"), "requests": 4}})["job_id"]
        assert execute(job_id, runtime) == {"requests": 4}
    assert len(arrived) == 8
    assert arrived[-1] - started >= 0.69                    # 8 requests at 10/s: the last turn 0.7 s after the first
    assert rates.current() is None                          # uninstalled once the job ended
    waited = samples(client)[("collector_rate_limit_wait_seconds_total", (("platform", "paced"),))]
    assert 0.5 <= waited < 3                                # 0.3 s by the first job, 0.4 s by the second


def test_a_runtime_not_throttled_takes_no_tokens(fake_redis: fakeredis.FakeRedis, unit_config: Config,
                                                local_server: LocalServer) -> None:
    local_server.route("/paced", lambda seen, n: json_answer({}))
    registry = Registry.discover("tests.paced_platforms")
    config = dataclasses.replace(unit_config, egress_allow="127.0.0.1")
    job_id = Submitter(connection=fake_redis, config=config, registry=registry).submit(
        {"platform_id": "paced", "settings": {"url": local_server.url("/paced"), "requests": 3}})["job_id"]
    runtime = Runtime(config, fake_redis, registry, throttled=False)    # the test kit's dry runs
    assert execute(job_id, runtime) == {"requests": 3}
    assert len(local_server.seen("/paced")) == 3
    assert fake_redis.keys("collector:bucket:*") == []
    assert metrics.read(fake_redis, Keys("collector"))["rate_waits"] == {}
