"""Job counters and duration histograms kept in one Redis hash, and their Prometheus rendering.

Workers are separate processes on other hosts, so no counter lives in process memory: each event adds to
the hash `collector:metrics` (records.Keys.metrics) inside a pipeline the caller already executes, so
counting costs no extra round trip. Fields are `<event>|<platform>` for counters and
`duration|<platform>|<bucket>` / `duration_sum|<platform>` / `duration_count|<platform>` for the histogram
(one bucket per observation; `/metrics` makes them cumulative).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.client import Pipeline

from collector.store.caps import CapSlots
from collector.store.dataloss import LossWatch
from collector.store.records import Keys
from collector.store.rq import RQ

log = logging.getLogger("collector.jobs")

# The job events counted per platform; the reliability code counts `retried` and `canceled` with `count()`.
EVENTS = ("submitted", "started", "finished", "failed", "retried", "canceled")
# Upper bounds (seconds) of the job duration buckets: from a no-op job to the default one-hour timeout.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, math.inf)
SEP = "|"  # platform ids are Python module names, so they never hold it

def count(pipe: Pipeline, keys: Keys, event: str, platform_id: str, amount: int = 1) -> None:
    """Queue `event` (one of EVENTS) for `platform_id` on `pipe`; a running job stopped on request counts as
    canceled."""
    event = "canceled" if event == "stopped" else event
    pipe.hincrby(keys.metrics(), f"{event}{SEP}{platform_id}", amount)


def bucket_for(seconds: float) -> str:
    """The label of the smallest bucket holding `seconds`."""
    for bound in BUCKETS:
        if seconds <= bound:
            return _label(bound)
    return "+Inf"


def job_submitted(pipe: Pipeline, keys: Keys, *, job_id: str, platform_id: str) -> None:
    """Hook of Submitter.submit: count the job; log it with `submitted` once the transaction went through."""
    count(pipe, keys, "submitted", platform_id)


def submitted(*, job_id: str, platform_id: str) -> None:
    log.info("job submitted", extra={"job_id": job_id, "platform_id": platform_id, "event": "submitted"})


def job_ended(pipe: Pipeline, keys: Keys, *, job_id: str, platform_id: str, status: str, duration_s: float) -> None:
    """Hook of the runner's end pipeline: count the end state and observe the duration (`ended` logs it once
    the pipeline went through)."""
    count(pipe, keys, status, platform_id)
    name = keys.metrics()
    pipe.hincrby(name, f"duration{SEP}{platform_id}{SEP}{bucket_for(duration_s)}", 1)
    pipe.hincrbyfloat(name, f"duration_sum{SEP}{platform_id}", round(duration_s, 6))
    pipe.hincrby(name, f"duration_count{SEP}{platform_id}", 1)


def rate_waited(pipe: Pipeline, keys: Keys, *, platform_id: str, seconds: float) -> None:
    """Hook of the runner's end pipeline: the seconds an attempt slept for tokens of its rate limits."""
    pipe.hincrbyfloat(keys.metrics(), f"rate_wait{SEP}{platform_id}", round(seconds, 6))


def ended(*, job_id: str, platform_id: str, status: str, duration_s: float) -> None:
    log.info("job %s in %.3f s", status, duration_s,
             extra={"job_id": job_id, "platform_id": platform_id, "event": status, "duration_s": duration_s})


def _label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def read(connection: Redis, keys: Keys) -> dict[str, Any]:
    """The hash parsed: `{"counters": {event: {platform: n}}, "durations": {platform: {...}}}`."""
    raw = connection.hgetall(keys.metrics())
    counters: dict[str, dict[str, float]] = defaultdict(dict)
    rate_waits: dict[str, float] = {}
    durations: dict[str, dict[str, Any]] = defaultdict(lambda: {"buckets": {}, "sum": 0.0, "count": 0})
    for key, value in raw.items():
        field = key.decode() if isinstance(key, bytes) else key
        number = float(value)
        kind, _, rest = field.partition(SEP)
        if kind == "duration":
            platform, _, bucket = rest.rpartition(SEP)
            durations[platform]["buckets"][bucket] = number
        elif kind == "duration_sum":
            durations[rest]["sum"] = number
        elif kind == "duration_count":
            durations[rest]["count"] = number
        elif kind == "rate_wait":
            rate_waits[rest] = number
        elif kind in EVENTS:
            counters[kind][rest] = number
    return {"counters": dict(counters), "durations": dict(durations), "rate_waits": rate_waits}


class RedisMetrics(Collector):
    """A Prometheus collector that reads the shared hash, the queue and the workers on every scrape."""

    def __init__(self, connection: Redis, keys: Keys, *, rq: RQ, loss_watch: LossWatch | None = None) -> None:
        self.connection = connection
        self.keys = keys
        self.rq = rq
        self.loss_watch = loss_watch
        self.queue_name = rq.queue.name

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        self.connection.ping()
        rtt = time.perf_counter() - started
        parsed = read(self.connection, self.keys)
        for event in EVENTS:
            family = CounterMetricFamily(f"collector_jobs_{event}", f"Jobs {event}, by platform.", labels=["platform"])
            for platform, value in sorted(parsed["counters"].get(event, {}).items()):
                family.add_metric([platform], value)
            yield family
        histogram = HistogramMetricFamily(
            "collector_job_duration_seconds", "Time from a job's start to its end, by platform.", labels=["platform"]
        )
        for platform, data in sorted(parsed["durations"].items()):
            running, buckets = 0.0, []
            for bound in BUCKETS:
                running += data["buckets"].get(_label(bound), 0.0)
                buckets.append((_label(bound), running))
            histogram.add_metric([platform], buckets, data["sum"])
        yield histogram
        waits = CounterMetricFamily("collector_rate_limit_wait_seconds",
                                    "Seconds jobs slept for tokens of their rate limits, by platform (written with "
                                    "each attempt's end).", labels=["platform"])
        for platform, seconds in sorted(parsed["rate_waits"].items()):
            waits.add_metric([platform], seconds)
        yield waits
        counts = self.rq.counts("queued", "started")
        depth = GaugeMetricFamily("collector_queue_depth", "Jobs waiting in the queue.", labels=["queue"])
        depth.add_metric([self.queue_name], counts["queued"])
        yield depth
        running_jobs = GaugeMetricFamily("collector_jobs_running", "Jobs a worker holds now.", labels=["queue"])
        running_jobs.add_metric([self.queue_name], counts["started"])
        yield running_jobs
        caps = CapSlots(self.connection, self.keys).counts()
        held = GaugeMetricFamily("collector_concurrency_slots_held",
                                 "Slots of a concurrency cap held by running (or woken) jobs.", labels=["cap"])
        parked = GaugeMetricFamily("collector_jobs_parked",
                                   "Jobs parked (`deferred`) until a slot of their concurrency cap frees.",
                                   labels=["cap"])
        for cap, (slots, waiting) in sorted(caps.items()):
            held.add_metric([cap], slots)
            parked.add_metric([cap], waiting)
        yield held
        yield parked
        workers = GaugeMetricFamily("collector_workers", "Live workers (registered, heartbeat not expired).")
        workers.add_metric([], self.rq.worker_count())
        yield workers
        yield GaugeMetricFamily("collector_redis_rtt_seconds", "Round-trip time of a Redis PING from the API.",
                                value=rtt)
        if self.loss_watch is not None:
            self.loss_watch.check()
            losses = self.loss_watch.losses()
            yield GaugeMetricFamily("collector_redis_data_losses",
                                    "Redis data losses noticed (the run key was gone) and still on record.",
                                    value=len(losses))
            yield GaugeMetricFamily("collector_redis_data_loss_noticed_timestamp_seconds",
                                    "When the last Redis data loss was noticed (unix seconds; 0: none on record).",
                                    value=losses[-1]["noticed_ts"] if losses else 0)
