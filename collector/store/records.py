"""The job record in Redis: the only place that builds Redis keys and reads or writes records."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from redis import Redis, WatchError
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from collector import defaults
from collector.config import Config
from collector.errors import RedisFullError, ServiceUnavailableError
from collector.store.datasets import KeptDataset, page_of
from collector.types import iso

# Fields stored as JSON; the others are plain strings.
JSON_FIELDS = frozenset({
    "settings", "progress", "result", "error", "datasets", "attempt", "stored_rows",
    "checkpoint", "retry", "max_attempts", "deaths", "timeout_s", "waiting", "children", "wait_used", "resumes",
    "retries_by_hand", "notify",
})
# Fields never shown in an API answer.
HIDDEN_FIELDS = frozenset({"secrets", "timeout_s", "inputs", "wait_nonce", "wait_used", "lease", "state_pending"})
ENDED = frozenset({"finished", "failed", "stopped", "canceled"})
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DATASETS = ("original", "processed")
# The order fields are shown in; fields a later version adds come after these.
VIEW_ORDER = (
    "job_id", "status", "platform_id", "client_id", "settings", "progress", "result", "error", "attempt",
    "worker", "created_at", "enqueued_at", "started_at", "ended_at", "stored_rows", "datasets", "datasets_page",
    "waiting", "waiting_for", "concurrency_key",
    "parent_id", "children",
)


def connect(url: str, *, blocking: bool = False, connect_timeout_s: float = defaults.REDIS_CONNECT_TIMEOUT_S,
            socket_timeout_s: float = defaults.REDIS_SOCKET_TIMEOUT_S) -> Redis:
    """A client for `url`. API clients fail fast (a quick 503 beats a hung request): each connect gives up after
    `connect_timeout_s`, each answer after `socket_timeout_s`, and only a refused or dropped connection is tried
    again (once: a Redis that restarted leaves pooled connections closed); a timeout is not, so a frozen Redis
    costs a request one timeout. `blocking` clients, which wait on queues, have no read timeout."""
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=None if blocking else socket_timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
    )


def encode(fields: Mapping[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v, default=str) if k in JSON_FIELDS else str(v) for k, v in fields.items()}


def decode(raw: Mapping[str | bytes, str | bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        record[name] = json.loads(text) if name in JSON_FIELDS else text
    return record


class Keys:
    """Every Redis key collector owns, under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def dataset(self, job_id: str, name: str, chunk: int = 0) -> str:
        """A dataset's rows `chunk * DATASET_CHUNK_ROWS` onwards, as a JSON array (the first chunk has no suffix)."""
        return f"{self.prefix}:job:{job_id}:dataset:{name}" + (f":{chunk}" if chunk else "")

    def events(self, job_id: str) -> str:
        """List of the job's events, one compact JSON object each, capped at EVENTS_MAXLEN (a list, not a stream:
        a stream preallocates 4 kB, more than all of a small job's events)."""
        return f"{self.prefix}:job:{job_id}:events:list"

    def legacy_events(self, job_id: str) -> str:
        """The stream earlier versions kept a job's events in: still read (and expired) for their jobs."""
        return f"{self.prefix}:job:{job_id}:events"

    def check(self, check_id: str) -> str:
        """A connection check's short-lived request: platform, masked settings, sealed secrets."""
        return f"{self.prefix}:check:{check_id}"

    def check_answer(self, check_id: str) -> str:
        """The list a worker pushes a check's answer to; the API waits on it."""
        return f"{self.prefix}:check:{check_id}:answer"

    def pool(self, pool_name: str) -> str:
        return f"{self.prefix}:pool:{pool_name}"

    def process(self, process_id: str) -> str:
        return f"{self.prefix}:process:{process_id}"

    def processes_active(self) -> str:
        """Set of processes still running: what pools advance."""
        return f"{self.prefix}:processes:active"

    def processes_named(self, name: str) -> str:
        """Set of the processes run under one definition name (to void old versions)."""
        return f"{self.prefix}:processes:name:{name}"

    def processes_index(self) -> str:
        """Sorted set of every process id, scored by creation time (epoch seconds): what `/process/list` reads."""
        return f"{self.prefix}:processes"

    def idempotency(self, digest: str) -> str:
        """A submit's idempotency key (as an HMAC under the secret key): the first job and its spec's HMAC."""
        return f"{self.prefix}:idempotency:{digest}"

    def schedule(self, schedule_id: str) -> str:
        return f"{self.prefix}:schedule:{schedule_id}"

    def schedules_due(self) -> str:
        """Sorted set: schedule id → when its next tick is due (unix seconds)."""
        return f"{self.prefix}:schedules:due"

    def schedule_tick(self, schedule_id: str, tick: int) -> str:
        """Claimed by the one process that fires a tick."""
        return f"{self.prefix}:schedule:{schedule_id}:tick:{tick}"

    def pool_children(self, pool_name: str) -> str:
        """Refreshed by every living child of a pool: the pool shows life while its supervisor or a child does."""
        return f"{self.prefix}:pool:{pool_name}:children"

    def pools(self) -> str:
        """Hash of every pool that announced itself: name → start time (its heartbeat is `pool(name)`)."""
        return f"{self.prefix}:pools"

    def cancels(self) -> str:
        """Set of running jobs someone asked to cancel; the supervisors holding them watch it."""
        return f"{self.prefix}:cancel-requests"

    def console_session_ended(self, session_id: str) -> str:
        """A console session signed out (`store/console_sessions.py`), kept until its cookie would expire."""
        return f"{self.prefix}:console:ended:{session_id}"

    def open_jobs(self) -> str:
        """Sorted set of the jobs not yet ended, scored by creation time: what the reaper's sweep reads."""
        return f"{self.prefix}:jobs:open"

    def strays(self) -> str:
        """Hash: job id → what its record said when a sweep last found it held by nothing (to confirm it next)."""
        return f"{self.prefix}:sweep:strays"

    def sweep(self) -> str:
        """Held by the one process that sweeps now (expires after the sweep interval)."""
        return f"{self.prefix}:sweep"

    def claim_beat(self, job_id: str) -> str:
        """Present while the process that claimed `job_id` (`collector run --from-job`) lives: it renews it every
        few seconds (expires after CLAIM_BEAT_TTL_S), so the sweep leaves the job to it and settles it once gone."""
        return f"{self.prefix}:claimed:{job_id}"

    def jobs_index(self) -> str:
        """Sorted set of every job id, scored by creation time (epoch seconds): what `/execution/list` reads."""
        return f"{self.prefix}:jobs"

    def wait_deadlines(self) -> str:
        """Sorted set: waiting job id → when its wait times out (epoch seconds); the maintenance tick reads it."""
        return f"{self.prefix}:waiting:deadlines"

    def waiting_parents(self) -> str:
        """Set of jobs waiting for their children; resumed as soon as the last child ends."""
        return f"{self.prefix}:waiting:parents"

    def submits(self, caller: str, window: int) -> str:
        """A caller's submits in one rate window (a counter that expires with the window)."""
        return f"{self.prefix}:submits:{window}:{caller}"

    def bucket(self, name: str) -> str:
        """A rate limit's token bucket (`platform:<id>`, `connection:<name>`): when its next token is free, in
        microseconds of Redis' clock; it expires once the bucket is full again."""
        return f"{self.prefix}:bucket:{name}"

    def bucket_hold(self, name: str) -> str:
        """Until when a source's back-off holds a bucket (microseconds of Redis' clock); expires with it."""
        return f"{self.prefix}:bucket:{name}:hold"

    def deliveries_due(self) -> str:
        """Sorted set: webhook delivery id → when it is next tried (epoch seconds); pools deliver what is due."""
        return f"{self.prefix}:notify:due"

    def delivery(self, delivery_id: str) -> str:
        """One webhook delivery: job, connection name, event, body (never a secret), tries so far."""
        return f"{self.prefix}:notify:delivery:{delivery_id}"

    def metrics(self) -> str:
        """Hash of counters and duration buckets every API and worker process adds to; `/metrics` reads it."""
        return f"{self.prefix}:metrics"

    def run(self) -> str:
        """Hash of the run id the first process wrote on this Redis (no TTL): gone means Redis lost its data."""
        return f"{self.prefix}:run"

    def volatile_by_design(self) -> str:
        """Set by `collector up` on its embedded Redis, which keeps nothing on disk on purpose: no warning then."""
        return f"{self.prefix}:redis:volatile-by-design"

    def caps(self) -> str:
        """Set of the cap keys (`platform` or `platform:key`) that have held slots or parked jobs: what maintenance
        tends; one with neither is dropped."""
        return f"{self.prefix}:caps"

    def cap_slots(self, cap: str) -> str:
        """Sorted set of the jobs holding one of `cap`'s slots (running, or woken and queued to run), scored by
        when the slot frees itself should nothing release it (epoch seconds). Shared by every pool."""
        return f"{self.prefix}:cap:{cap}:slots"

    def cap_parked(self, cap: str) -> str:
        """List of the jobs parked over `cap` (`deferred`, waiting for a slot), oldest first."""
        return f"{self.prefix}:cap:{cap}:parked"

    def losses(self) -> str:
        """Hash of the data losses noticed: lost run id → JSON of when it was noticed."""
        return f"{self.prefix}:data-losses"

    def state(self, platform_id: str, state_key: str) -> str:
        """The incremental state runs of `state_key` on `platform_id` hand on: JSON of state, saved_at, job_id."""
        return f"{self.prefix}:state:{platform_id}:{state_key}"


def decode_fields(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    """An HMGET's answer as a record: the fields that are set, decoded."""
    return decode({n: v for n, v in zip(names, values, strict=True) if v is not None})


def push_event(connection: Redis | Pipeline, keys: Keys, job_id: str, fields: Mapping[str, Any]) -> None:
    """Append one event (`type`, `at` and its data) to a job's events list as compact JSON, keeping the last
    EVENTS_MAXLEN (RPUSH and LTRIM, on the caller's pipeline when it is one)."""
    key = keys.events(job_id)
    connection.rpush(key, json.dumps(fields, default=str, separators=(",", ":")))
    connection.ltrim(key, -defaults.EVENTS_MAXLEN, -1)


def _epoch_ms(at: str | None) -> int:
    try:
        return int(dt.datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _legacy_event(entry_id: bytes | str, raw: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    """An event of the stream earlier versions wrote: plain fields, a job event's data as JSON in `data`."""
    fields = decode(raw)
    event = {"id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
             "at": fields.get("at"), "type": fields.get("type")}
    event.update({k: v for k, v in fields.items() if k not in ("at", "type", "data")})
    if fields.get("data"):
        event.update(json.loads(fields["data"]))
    return event


T = TypeVar("T")


def run_watched(connection: Redis, attempt: Callable[[Pipeline], T], *, pipe: Pipeline | None = None) -> T:
    """`attempt(pipe)` on a transaction pipeline (`pipe`, or a new one of `connection`) until it gets through;
    what it returns.

    An attempt WATCHes keys, reads, then MULTI ... EXEC (or UNWATCHes and returns early, writing nothing).
    When a watched key changed before its EXEC (`WatchError`), it runs again from the start, reading anew.
    """
    with pipe if pipe is not None else connection.pipeline(transaction=True) as pipe:
        while True:
            try:
                return attempt(pipe)
            except WatchError:
                continue


# A run's writes, applied only while the run holds its lease: the record exists, carries the run's token and is
# still `started` (a recovery, a cancel before start or another attempt moved it on). ARGV[1] is the token, then
# each command as its length and its words. Answers 1 (written), 0 (the lease is another's), -1 (no record: a
# record deleted or expired under a running job is never re-created) or 2 (the run's end is written already: its
# last write marked the lease ended, and this is that write sent again after a lost answer, or a late check).
# The lease check itself, as a Lua function every fenced script starts with (`store/lanes.py` FENCED_THEN_TAKE too).
FENCE = """
local function fence(record, token)
  local held = redis.call('HMGET', record, 'lease', 'status')
  if not held[1] then
    if redis.call('EXISTS', record) == 0 then return -1 end
    return 0
  end
  if held[1] == token .. ':ended' then return 2 end
  if held[1] ~= token or held[2] ~= 'started' then return 0 end
  return 1
end
"""
FENCED_WRITE = FENCE + """
local fenced = fence(KEYS[1], ARGV[1])
if fenced ~= 1 then return fenced end
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""


def script_groups(commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Commands queued on a pipeline (its `command_stack` entries) as the groups a script applies them from: each
    command's word count, then its words."""
    groups: list[Any] = []
    for args, _options in commands:
        groups += [len(args), *args]
    return groups


class JobStore:
    """Reads and writes job records (`collector:job:<id>`) and the datasets beside them."""

    def __init__(self, connection: Redis, config: Config) -> None:
        self.connection = connection
        self.config = config
        self.keys = Keys(config.key_prefix)
        self._fenced_write: Script | None = None

    @property
    def fenced_write(self) -> Script:
        """The fenced-write script (its SHA computed once per store; only a running job's store needs it)."""
        if self._fenced_write is None:
            self._fenced_write = self.connection.register_script(FENCED_WRITE)
        return self._fenced_write

    def load_scripts(self) -> None:
        """Load the fenced-write script now, so a process's first write costs no extra round trips."""
        self.connection.script_load(FENCED_WRITE)

    def lease(self, job_id: str, token: str) -> Lease:
        """The hold of the run that wrote `token` as the record's `lease` at its start."""
        return Lease(self, job_id, token)

    def create(self, job_id: str, fields: Mapping[str, Any], pipeline: Pipeline) -> None:
        pipeline.hset(self.keys.job(job_id), mapping=encode(fields))

    def update(self, job_id: str, fields: Mapping[str, Any], pipeline: Pipeline | None = None) -> None:
        (pipeline or self.connection).hset(self.keys.job(job_id), mapping=encode(fields))

    def event(self, job_id: str, kind: str, pipeline: Pipeline | None = None, **data: Any) -> None:
        """Append an event to the job's capped list, on `pipeline` when given."""
        push_event(pipeline or self.connection, self.keys, job_id, {**data, "type": kind, "at": iso()})

    def events(self, job_id: str, *, after: str | None = None) -> list[dict[str, Any]]:
        """The job's events, oldest first: `{"id", "at", "type", ...data}`; `id` is `<ms>-<n>`, the n-th event
        of that millisecond (a job of an earlier version: its stream's entry ids, those events first); only those
        after event id `after` when given."""
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.xrange(self.keys.legacy_events(job_id))
            pipe.lrange(self.keys.events(job_id), 0, -1)
            legacy, entries = pipe.execute()
        events = [_legacy_event(entry_id, raw) for entry_id, raw in legacy]
        seen: dict[int, int] = {}
        for raw in entries:
            fields = json.loads(raw)
            ms = _epoch_ms(fields.get("at"))
            seen[ms] = seen.get(ms, -1) + 1
            events.append({"id": f"{ms}-{seen[ms]}", "at": fields.pop("at", None), "type": fields.pop("type", None),
                           **fields})
        if after:
            last = _event_order(after)
            events = [event for event in events if _event_order(event["id"]) > last]
        return events

    def exists(self, job_id: str) -> bool:
        return bool(self.connection.exists(self.keys.job(job_id)))

    def read(self, job_id: str, *names: str) -> dict[str, Any]:
        """Some fields of a record (all when no names are given); `{}` when there is no such job."""
        key = self.keys.job(job_id)
        if not names:
            return decode(self.connection.hgetall(key))
        return decode_fields(names, self.connection.hmget(key, list(names)))

    def save_datasets(
        self, job_id: str, datasets: Mapping[str, KeptDataset], pipeline: Pipeline, ttl_s: int | None = None
    ) -> dict[str, Any]:
        """Queue the datasets' writes on `pipeline` (expiring in `ttl_s` when given), one `SET` per chunk of
        `DATASET_CHUNK_ROWS` rows; returns their summary (`{"rows", "bytes"}`, and what was cut)."""
        summary: dict[str, Any] = {}
        for name, kept in datasets.items():
            for chunk, payload in enumerate(kept.chunks(defaults.DATASET_CHUNK_ROWS)):
                pipeline.set(self.keys.dataset(job_id, name, chunk), payload, ex=ttl_s)
            summary[name] = kept.summary()
        return summary

    def read_datasets(self, job_id: str) -> dict[str, list[Any]]:
        """Every kept row of the job's datasets (bounded by the dataset caps): for a local run's `--out`."""
        summary = self.read(job_id, "datasets").get("datasets") or {}
        kept = {name: int(info.get("rows", 0)) for name, info in summary.items() if name in DATASETS}
        limit = max(kept.values(), default=0) or 1
        with self.connection.pipeline(transaction=False) as pipe:
            self._ask_pages(pipe, job_id, 0, limit)
            return self._pages(job_id, pipe.execute(), kept, 0, limit)

    def _ask_pages(self, pipe: Pipeline, job_id: str, offset: int, limit: int) -> None:
        """Queue the GETs of the chunks that hold rows `offset` to `offset + limit` of every dataset."""
        size = defaults.DATASET_CHUNK_ROWS
        for name in DATASETS:
            for chunk in range(offset // size, (offset + limit - 1) // size + 1):
                pipe.get(self.keys.dataset(job_id, name, chunk))

    def _pages(self, job_id: str, payloads: Sequence[bytes | None], kept: Mapping[str, int], offset: int,
               limit: int) -> dict[str, list[Any]]:
        """The rows of each dataset `_ask_pages` read (`kept`: name → rows the summary says were kept)."""
        size = defaults.DATASET_CHUNK_ROWS
        first = offset // size
        span = (offset + limit - 1) // size - first + 1
        pages: dict[str, list[Any]] = {}
        for n, name in enumerate(DATASETS):
            chunks = payloads[n * span:(n + 1) * span]
            if name not in kept and all(chunk is None for chunk in chunks):
                continue
            rows = page_of(chunks, first_chunk=first, rows_per_chunk=size, offset=offset, limit=limit)
            if not rows and first and kept.get(name, 0) > offset:
                # Written before datasets were cut into chunks: every row is in the first key.
                legacy = self.connection.get(self.keys.dataset(job_id, name))
                rows = page_of([legacy], first_chunk=0, rows_per_chunk=size, offset=offset, limit=limit)
            pages[name] = rows
        return pages

    def expire(self, job_id: str, ttl_s: int, pipeline: Pipeline, datasets: Iterable[str] = DATASETS) -> None:
        """Let a record and everything beside it expire: it has ended."""
        pipeline.expire(self.keys.job(job_id), ttl_s)
        pipeline.expire(self.keys.events(job_id), ttl_s)
        pipeline.expire(self.keys.legacy_events(job_id), ttl_s)
        for name in datasets:
            pipeline.expire(self.keys.dataset(job_id, name), ttl_s)

    def ttl_for(self, status: str) -> int:
        return self.config.failed_record_ttl_s if status == "failed" else self.config.record_ttl_s

    def view(self, job_id: str, *, full: bool = False, offset: int = 0,
             limit: int = defaults.FULL_PAGE_ROWS) -> dict[str, Any] | None:
        """What `GET /execution/get` answers: the record without hidden fields; with `full`, rows `offset` to
        `offset + limit` of each dataset, and `datasets_page` saying what was kept and where the next page starts.
        One round trip: only the chunks holding the page are read, so an answer is never larger than a page."""
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            if full:
                self._ask_pages(pipe, job_id, offset, limit)
            raw, *payloads = pipe.execute()
        if not raw:
            return None
        record = decode(raw)
        for name in HIDDEN_FIELDS:
            record.pop(name, None)
        summary = record.pop("datasets", {}) or {}
        if full:
            kept = {name: int(info.get("rows", 0)) for name, info in summary.items() if name in DATASETS}
            record["datasets"] = self._pages(job_id, payloads, kept, offset, limit)
            more = offset + limit < max(kept.values(), default=0)
            record["datasets_page"] = {"offset": offset, "limit": limit,
                                       "next_offset": offset + limit if more else None, "kept": summary}
        else:
            record["datasets"] = summary
        record["job_id"] = job_id
        ordered = {name: record.pop(name) for name in VIEW_ORDER if name in record}
        return {**ordered, **dict(sorted(record.items()))}


class Lease:
    """One attempt's hold on its job record, taken when it starts (a random token in the record's `lease`).

    Every write of the run goes through `write`: applied atomically (one Lua script) only while the record
    still carries the token and says `started`. Once refused, `lost` says why (`taken`: the job was recovered,
    ended or runs as another attempt; `gone`: the record was deleted or expired) and every later write is
    refused without asking Redis: the run must stop, writing nothing more."""

    def __init__(self, store: JobStore, job_id: str, token: str) -> None:
        self.store = store
        self.job_id = job_id
        self.token = token
        self.lost: str | None = None

    def write(self, build: Callable[[Pipeline], Any], *, connection: Redis | None = None) -> bool:
        """Queue the writes on the pipeline `build` gets; send them, fenced, in one round trip. True when written."""
        if self.lost is not None:
            return False
        return self.send(self.fenced(build), connection=connection)

    def fenced(self, build: Callable[[Pipeline], Any]) -> list[Any]:
        """The writes `build` queues, as the fenced-write script takes them (the token first): to send now
        (`send`) or with other writes (`answered` then reads the answer)."""
        with self.store.connection.pipeline(transaction=False) as pipe:
            build(pipe)
            return [self.token, *script_groups(pipe.command_stack)]

    def send(self, argv: list[Any], *, connection: Redis | None = None) -> bool:
        """Send fenced writes made by `fenced`, in one round trip. True when written."""
        answer = self.store.fenced_write(keys=[self.store.keys.job(self.job_id)], args=argv, client=connection)
        return self.answered(answer)

    def answered(self, answer: Any) -> bool:
        """What the fenced-write script answered: True when written; else the lease is lost, and `lost` says why."""
        if answer in (1, 2):
            return True
        self.lost = "gone" if answer == -1 else "taken"
        return False

    def end(self, pipe: Pipeline) -> None:
        """Queue, with the run's last write, the mark that its end is written: sent again, it is not refused."""
        self.store.update(self.job_id, {"lease": f"{self.token}:ended"}, pipe)

    def held(self, *, connection: Redis | None = None) -> bool:
        """Ask Redis whether the run still holds its lease (writes nothing)."""
        return self.write(lambda pipe: None, connection=connection)


def redis_down(config: Config, exc: Exception) -> ServiceUnavailableError:
    """The 503 for a Redis that cannot be reached: says where (password masked) and that nothing was written."""
    where = config.redis_where
    return ServiceUnavailableError(
        f"Redis at {where} is unreachable ({type(exc).__name__}); nothing was written. "
        f"Check that Redis runs and {config.redis_setting} points to it, then retry.",
        details={"service": "redis"},
    )


def redis_full(config: Config) -> RedisFullError:
    """The 503 for a Redis at its maxmemory: says where (password masked), that nothing was written, and what helps."""
    where = config.redis_where
    return RedisFullError(
        f"Redis at {where} is full: it reached its maxmemory and refuses writes (OOM); nothing was written. "
        "Records of ended jobs expire over time (COLLECTOR_RECORD_TTL_S): retry later, or ask the operator to "
        "raise Redis' maxmemory or lower the record TTLs and dataset caps.",
        details={"service": "redis", "reason": "maxmemory"},
    )


def _event_order(event_id: str) -> tuple[int, int]:
    """An event id `<ms>-<n>` as a pair that sorts as the events do."""
    ms, _, n = event_id.partition("-")
    return int(ms), int(n or 0)
