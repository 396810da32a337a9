"""Concurrency slots in Redis, shared by every pool: taken, given back and handed to parked jobs atomically (Lua).

A cap key (`platform` or `platform:key`) has a sorted set of the jobs holding its slots, each scored by when its
slot frees itself (the job's timeout, kill grace and some slack past the time it was taken: a slot nothing
released, after a crash, comes back on its own), and a FIFO list of the jobs parked over it. Parking writes the
record (`deferred`, `waiting_for: concurrency`), its event and RQ's status in the same script as the list, so a
job is never parked in the list but shown otherwise, or the other way round.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

from collector import defaults
from collector.store.records import Keys
from collector.types import iso

ADMITTED, PARKED, UNCAPPED = 1, 0, 2

# KEYS: slots, parked, caps set, record, events, RQ's job hash. ARGV: job id, cap, limit, now, slot expiry, the
# `deferred` event (JSON), events kept. Answers ADMITTED (it holds a slot: a new one, or one a wake kept for it),
# PARKED, or UNCAPPED when the record is not `queued` (gone, ended, moved on: the runner's start decides).
# A new job parks while others are parked, even with a slot free: the oldest parked is woken first.
GATE = """
if redis.call('HGET', KEYS[4], 'status') ~= 'queued' then return 2 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
  return 1
end
redis.call('SADD', KEYS[3], ARGV[2])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
  return 1
end
if not redis.call('LPOS', KEYS[2], ARGV[1]) then redis.call('RPUSH', KEYS[2], ARGV[1]) end
redis.call('HSET', KEYS[4], 'status', 'deferred', 'waiting_for', 'concurrency')
redis.call('RPUSH', KEYS[5], ARGV[6])
redis.call('LTRIM', KEYS[5], -tonumber(ARGV[7]), -1)
if redis.call('EXISTS', KEYS[6]) == 1 then redis.call('HSET', KEYS[6], 'status', 'deferred') end
return 0
"""

# KEYS: slots, parked. ARGV: limit, now, slot expiry. While a slot is free, the oldest parked job takes it (kept
# for it until it runs); answers their ids, oldest first, for the caller to queue again.
WAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local woken = {}
while redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  woken[#woken + 1] = id
end
return woken
"""

# KEYS: caps set, slots, parked. ARGV: cap. Forget a cap key with no slot held and no job parked.
DROP = """
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.call('SREM', KEYS[1], ARGV[1])
end
return 0
"""


def free_slot(pipe: Any, keys: Keys, job_id: str, cap: str) -> None:
    """Queue on `pipe` the end of `job_id`'s hold on `cap`: its slot, or its place among the parked. Plain
    commands, so a run's fenced last write can carry them."""
    pipe.zrem(keys.cap_slots(cap), job_id)
    pipe.lrem(keys.cap_parked(cap), 0, job_id)


class CapSlots:
    """The slots and parked jobs of every cap key on one Redis."""

    def __init__(self, connection: Redis, keys: Keys) -> None:
        self.connection = connection
        self.keys = keys
        self._gate = connection.register_script(GATE)
        self._wake = connection.register_script(WAKE)
        self._drop = connection.register_script(DROP)

    def gate(self, job_id: str, *, cap: str, limit: int, now: float, expiry: float, rq_job_key: str) -> int:
        """Take a slot of `cap` for `job_id`, or park it: ADMITTED, PARKED or UNCAPPED (see GATE)."""
        keys = self.keys
        event = json.dumps({"waiting_for": "concurrency", "cap": cap, "limit": limit, "type": "deferred",
                            "at": iso(now)}, separators=(",", ":"))
        return int(self._gate(
            keys=[keys.cap_slots(cap), keys.cap_parked(cap), keys.caps(), keys.job(job_id), keys.events(job_id),
                  rq_job_key],
            args=[job_id, cap, limit, now, expiry, event, defaults.EVENTS_MAXLEN]))

    def wake(self, cap: str, *, limit: int, now: float, expiry: float) -> list[str]:
        """The parked jobs of `cap` that took the slots free now, oldest first."""
        woken = self._wake(keys=[self.keys.cap_slots(cap), self.keys.cap_parked(cap)], args=[limit, now, expiry])
        return [raw.decode() if isinstance(raw, bytes) else raw for raw in woken]

    def caps(self) -> list[str]:
        return sorted(raw.decode() for raw in self.connection.smembers(self.keys.caps()))

    def counts(self) -> dict[str, tuple[int, int]]:
        """Every cap key's slots held and jobs parked now, in one round trip after the caps set's: `{cap: (held,
        parked)}`. Slots past their expiry (a crash nothing released) still count until maintenance or a take drops
        them."""
        caps = self.caps()
        with self.connection.pipeline(transaction=False) as pipe:
            for cap in caps:
                pipe.zcard(self.keys.cap_slots(cap))
                pipe.llen(self.keys.cap_parked(cap))
            answers = pipe.execute() if caps else []
        return {cap: (int(answers[2 * i]), int(answers[2 * i + 1])) for i, cap in enumerate(caps)}

    def holders(self, cap: str) -> list[str]:
        return [raw.decode() for raw in self.connection.zrange(self.keys.cap_slots(cap), 0, -1)]

    def drop_if_idle(self, cap: str) -> bool:
        keys = self.keys
        return bool(self._drop(keys=[keys.caps(), keys.cap_slots(cap), keys.cap_parked(cap)], args=[cap]))
