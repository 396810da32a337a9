"""A job's start in one Lua script: its record marked started under a new lease, read, counted, and its worker's
own start writes (RQ's) applied with it, so a start is one command and one round trip."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from redis import Redis
from redis.commands.core import Script

from collector import defaults
from collector.store import scripts
from collector.store.metrics import SEP
from collector.store.records import Keys, encode, script_groups

# KEYS: the job record, its events list, the metrics hash. ARGV: how many fields to read, the fields, how many
# values to set (name, value pairs), the pairs, the `started` event (JSON), the events kept, the metrics field
# prefix of `started`, this attempt's lease token, then the worker's own writes as groups (count of words, the
# words), applied first. Returns {the fields read (false: absent), the attempt number}.
#
# A job starts only from `queued` (or `started` under this attempt's own lease: the same start sent again after
# its answer was lost). Otherwise the attempt number is REFUSED and nothing is written but the worker's LREMs
# (the job leaves its claims): the record is gone, ended, or another attempt holds it (a worker frozen past its
# pool's death starts a job it took before the freeze, which the sweep queued again and another worker started,
# parked or finished meanwhile).
START = """
local i = 1
local function take(n) local part = {unpack(ARGV, i, i + n - 1)}; i = i + n; return part end
local fields = take(tonumber(take(1)[1]))
local pairs_ = take(tonumber(take(1)[1]))
local event, kept, prefix, lease = unpack(take(4))
local now = redis.call('HMGET', KEYS[1], 'platform_id', 'status', 'lease')
local startable = now[1] and (now[2] == 'queued' or (now[2] == 'started' and now[3] == lease))
while i <= #ARGV do
  local words = take(tonumber(take(1)[1]))
  if startable or string.upper(words[1]) == 'LREM' then redis.call(unpack(words)) end
end
local got = redis.call('HMGET', KEYS[1], unpack(fields))
if not startable then
  return {got, REFUSED}
end
redis.call('HSET', KEYS[1], unpack(pairs_))
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('RPUSH', KEYS[2], event)
redis.call('LTRIM', KEYS[2], -tonumber(kept), -1)
local platform = redis.call('HGET', KEYS[1], 'platform_id')
if platform then redis.call('HINCRBY', KEYS[3], prefix .. platform, 1) end
return {got, attempt}
"""
REFUSED = -1  # the attempt number of a start the record refused
START = START.replace("REFUSED", str(REFUSED))
START_SCRIPT = Script(None, START.encode())
STARTED_PREFIX = f"started{SEP}"  # the metrics field of `started`, less the platform


def load(connection: Redis) -> None:
    """Load the start script now, so a process's first start costs no extra round trips."""
    connection.script_load(START)


def start(connection: Redis, keys: Keys, job_id: str, *, fields: Sequence[str], values: Mapping[str, Any],
          event: Mapping[str, Any], before: Sequence[tuple[Any, ...]] = ()) -> tuple[list[Any], int]:
    """Apply the writes `before` (a pipeline's command stack), then mark the job started with `values` (its
    `lease` among them), count it and add its `started` event; returns the record's `fields` as they were, and its
    attempt number now, or REFUSED (nothing written but `before`'s LREMs) unless the record is `queued`, or
    `started` under the same lease (this start sent again)."""
    pairs = [word for name, value in encode(values).items() for word in (name, value)]
    argv = [len(fields), *fields, len(pairs), *pairs, json.dumps(event, default=str, separators=(",", ":")),
            defaults.EVENTS_MAXLEN, STARTED_PREFIX, values.get("lease", ""), *script_groups(before)]
    got, attempt = scripts.call(START_SCRIPT, keys=[keys.job(job_id), keys.events(job_id), keys.metrics()],
                                args=argv, client=connection)
    return list(got), int(attempt)
