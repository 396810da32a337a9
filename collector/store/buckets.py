"""Token buckets of the rate limits, in Redis, shared by every pool: one Lua script takes a token, one backs off.

Kept apart from `store/ratelimit.py`, which counts the API's submits per caller in fixed windows and refuses the
excess; a bucket here never refuses a request, it says how long the job must wait for its turn.

A bucket is one value: the time its next token is free (microseconds of Redis' clock, so every host agrees). A
rate of `n` per `t` seconds spaces requests evenly, one every `t / n` seconds, without bursts (a burst would break
a source's per-second window). Taking reserves the next free turn at once, so waiting callers are served in the
order they asked, in one round trip each. A back-off (a source's `Retry-After`) moves the next free turn to its end:
the bucket is empty until then, for every pool; it refills at its rate from there. Turns reserved before the
back-off came are not used while it lasts (its hold): their holders queue again. A bucket at rest expires."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis import Redis

from collector.rates import Rate
from collector.store.records import Keys

MICROS = 1_000_000



def now_from(arg: int) -> str:
    """The Lua every script begins with: `now` in µs, ARGV[arg] when the caller gives it (tests), else Redis' clock
    (every host agrees on it)."""
    return f"""
local now
if ARGV[{arg}] ~= '' then
  now = tonumber(ARGV[{arg}])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""


# KEYS: the buckets. ARGV[1]: the longest wait taken (µs); ARGV[2]: now (µs), or '' for Redis' own clock;
# ARGV[2 + i]: the interval of KEYS[i] (µs). Answers {1, wait} with the turns reserved, or {0, wait} with nothing
# taken when the wait would be longer than ARGV[1].
TAKE = now_from(2) + """
local go = now
local free = {}
for i, key in ipairs(KEYS) do
  free[i] = tonumber(redis.call('GET', key) or '0')
  if free[i] > go then go = free[i] end
end
local wait = go - now
if wait > tonumber(ARGV[1]) then
  return {0, wait}
end
for i, key in ipairs(KEYS) do
  local next_free = math.max(free[i], go) + tonumber(ARGV[2 + i])
  redis.call('SET', key, string.format('%d', next_free), 'PX', math.floor((next_free - now) / 1000) + 1000)
end
return {1, wait}
"""

# KEYS: the buckets, then their holds. ARGV[1]: how long they stay empty (µs); ARGV[2]: now (µs), or '' for Redis'
# own clock. A bucket whose next free turn is later already keeps it; the hold says until when no turn reserved
# before the back-off may be used. Answers the end of the back-off (µs).
BACK_OFF = now_from(2) + """
local until_free = now + tonumber(ARGV[1])
local ttl = math.floor((until_free - now) / 1000) + 1000
local n = #KEYS / 2
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[i]) or '0') < until_free then
    redis.call('SET', KEYS[i], string.format('%d', until_free), 'PX', ttl)
  end
  if tonumber(redis.call('GET', KEYS[n + i]) or '0') < until_free then
    redis.call('SET', KEYS[n + i], string.format('%d', until_free), 'PX', ttl)
  end
end
return until_free
"""

# KEYS: the holds of buckets. ARGV[1]: now (µs), or ''. Answers how long the longest hold still lasts (µs, 0: none).
HELD = now_from(1) + """
local left = 0
for _, key in ipairs(KEYS) do
  local hold = tonumber(redis.call('GET', key) or '0')
  if hold - now > left then left = hold - now end
end
return left
"""


def micros(seconds: float) -> int:
    return max(0, round(seconds * MICROS))


class Buckets:
    """The rate limits' buckets on one Redis."""

    def __init__(self, connection: Redis, keys: Keys) -> None:
        self.connection = connection
        self.keys = keys
        self._take = connection.register_script(TAKE)
        self._back_off = connection.register_script(BACK_OFF)
        self._held = connection.register_script(HELD)

    def take(self, rates: Mapping[str, Rate], *, max_wait_s: float, now: float | None = None) -> tuple[bool, float]:
        """Reserve the next turn of every bucket named in `rates` (one turn for all of them): `(True, seconds to
        wait before going)`. `(False, seconds)` with nothing reserved when that wait is over `max_wait_s`. `now`
        (seconds) stands in for Redis' clock in tests."""
        names = list(rates)
        if not names:
            return True, 0.0
        args = [micros(max_wait_s), "" if now is None else micros(now), *(micros(rates[n].interval_s) for n in names)]
        granted, wait = self._take(keys=[self.keys.bucket(n) for n in names], args=args)
        return bool(granted), int(wait) / MICROS

    def back_off(self, names: Iterable[str], seconds: float, *, now: float | None = None) -> float:
        """Empty the buckets `names` for `seconds`, for every pool; the end of the back-off (seconds, Redis' clock)."""
        names = list(names)
        if not names:
            return 0.0
        keys = [self.keys.bucket(n) for n in names] + [self.keys.bucket_hold(n) for n in names]
        until = self._back_off(keys=keys, args=[micros(seconds), "" if now is None else micros(now)])
        return int(until) / MICROS

    def held_for(self, names: Iterable[str], *, now: float | None = None) -> float:
        """How long a back-off of any of `names` still lasts (seconds; 0: none). A turn reserved before a back-off
        came is not used while it lasts: its holder queues again."""
        keys = [self.keys.bucket_hold(n) for n in names]
        if not keys:
            return 0.0
        return int(self._held(keys=keys, args=["" if now is None else micros(now)])) / MICROS

    def next_free(self, name: str) -> float | None:
        """When the bucket's next turn is free (seconds, Redis' clock); None for a bucket at rest (full)."""
        value = self.connection.get(self.keys.bucket(name))
        return None if value is None else int(value) / MICROS
