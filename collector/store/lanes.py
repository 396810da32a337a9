"""Priority lanes: which lane a pool child takes its next job from, and the take itself (a move into its claims).

Jobs wait in one list per priority (`high`, `normal`, `low`; `store/rq.py` names them). A child takes higher lanes
first, except that a job waiting at the head of its lane counts one lane higher for every `age_s` seconds it has
waited, so a low job is never starved for good; between lanes of equal rank the head that has waited longest goes
first. Choice and move are one Lua script (LMOVE from the chosen lane into the child's claims list), so a job is
always in a lane or in one child's claims. With every lane empty the child blocks on a wake-up list that each push
to a lane feeds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.commands.core import Script

from collector.store import scripts
from collector.store.records import FENCE, script_groups

PRIORITIES = ("high", "normal", "low")  # lanes, taken in this order
DEFAULT_PRIORITY = "normal"
WAKE_TOKENS = 256    # wake-ups kept for children not yet waiting; each only makes a child look again
WAKE_POLL_S = 5.0    # the longest a waiting child goes without looking again, whatever it was told

# KEYS: the lanes, highest priority first, then the claims list. ARGV: the aging step in seconds (0: strict
# priority), the prefix of RQ's job hashes. Each non-empty lane's head ranks as its own lane less one per aging step
# it has waited since RQ queued it (`enqueued_at` of its job hash, read here: a standalone Redis, never a cluster);
# the best rank is taken, and between equal ranks the head that waited longest, then the higher lane. Returns
# {lane, job id} or false; with ARGV[3] = '1', {lane, job id, the job hash (HGETALL: empty when gone)}, so a
# take and the read of what it took are one round trip.
_TAKE = """
local claims = KEYS[#KEYS]
local age = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function epoch(text)
  if not text then return nil end
  local y, mo, d, h, mi, s = string.match(text, '^(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d.]+)')
  if not y then return nil end
  y, mo = tonumber(y), tonumber(mo)
  if mo <= 2 then y, mo = y - 1, mo + 12 end
  local days = 365 * y + math.floor(y / 4) - math.floor(y / 100) + math.floor(y / 400)
    + math.floor((153 * (mo - 3) + 2) / 5) + tonumber(d) - 719469
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end
local best, best_rank, best_waited = nil, 0, 0
for i = first, #KEYS - 1 do
  local head = redis.call('LINDEX', KEYS[i], 0)
  if head then
    local rank, waited = i - first, 0
    if age > 0 then
      local queued = epoch(redis.call('HGET', ARGV[2] .. head, 'enqueued_at'))
      if queued then waited = math.max(0, now - queued) end
      rank = math.max(0, rank - math.floor(waited / age))
    end
    if best == nil or rank < best_rank or (rank == best_rank and waited > best_waited) then
      best, best_rank, best_waited = i, rank, waited
    end
  end
end
if best == nil then return false end
local taken = redis.call('LMOVE', KEYS[best], claims, 'LEFT', 'RIGHT')
if ARGV[3] == '1' then return {KEYS[best], taken, redis.call('HGETALL', ARGV[2] .. taken)} end
return {KEYS[best], taken}
"""
TAKE = "local first = 1\n" + _TAKE  # the lanes are KEYS[first] to the key before the claims
TAKE_SCRIPT = Script(None, TAKE.encode())  # sent by its SHA (EVALSHA), loaded once per server

# The same take, after the writes of a job's end given as ARGV[4..] (groups: how many words, the words), applied
# first: a job's end and the take of the next are one command. Returns {lane or false, job id or false, job hash,
# the answer of the last write}.
_APPLY = """
local last = false
local function apply(from, to)
  local i = from
  while i <= to do
    local n = tonumber(ARGV[i])
    last = redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
  end
end
"""
_TAKE_AFTER = _TAKE.replace(
    "if best == nil then return false end", "if best == nil then return {false, false, {}, last, fenced} end").replace(
    "redis.call('HGETALL', ARGV[2] .. taken)}", "redis.call('HGETALL', ARGV[2] .. taken), last, fenced}")
APPLIED_THEN_TAKE = "local first, fenced = 1, 1\n" + _APPLY + "apply(4, #ARGV)\n" + _TAKE_AFTER
APPLIED_THEN_TAKE_SCRIPT = Script(None, APPLIED_THEN_TAKE.encode())

# The same, with a finished run's own end first, fenced as `records.FENCED_WRITE` fences it (the same `FENCE`):
# KEYS[1] is the job record, ARGV[4] how many words the fenced part has (the lease token, then its groups).
# Applied only while the run holds its lease (or its end is written already: a resend); else nothing is applied
# or taken, and the answer's fifth part says why (0: the lease is another's, -1: no record), as the fenced-write
# script answers.
FENCED_THEN_TAKE = "local first = 2\n" + _APPLY + FENCE + """
local f = tonumber(ARGV[4])
local fenced = fence(KEYS[1], ARGV[5])
if fenced ~= 1 and fenced ~= 2 then return {false, false, {}, false, fenced} end
if fenced == 1 then apply(6, 4 + f) end
apply(5 + f, #ARGV)
""" + _TAKE_AFTER
FENCED_THEN_TAKE_SCRIPT = Script(None, FENCED_THEN_TAKE.encode())


class Taker:
    """How one pool child takes jobs: lanes highest first, its claims list, the wake-up list, the aging step; with
    `fetch`, each take reads the job hash it took too (`job_hash`)."""

    def __init__(self, lanes: Sequence[str], *, claims: str, wake: str, age_s: float, job_prefix: str,
                 fetch: bool = False) -> None:
        self.lanes, self.claims, self.wake, self.age_s = list(lanes), claims, wake, age_s
        self.job_prefix, self.fetch = job_prefix, fetch
        self.job_hash: dict[bytes, bytes] = {}  # what the last take read of the job it took ({}: its hash is gone)

    def take_once(self, connection: Redis) -> tuple[bytes, bytes] | None:
        """Move the next job into the claims list (one script): `(lane, job id)`, or None when every lane is empty."""
        result = scripts.call(TAKE_SCRIPT, keys=[*self.lanes, self.claims], args=self.args(), client=connection)
        return self.taken(result)

    def args(self) -> list[object]:
        return [self.age_s, self.job_prefix, "1" if self.fetch else "0"]

    def take_after(self, connection: Redis, commands: Sequence[tuple[Any, ...]],
                   fenced: tuple[str, Sequence[Any]] | None = None) -> tuple[Any, Any, int]:
        """Apply `commands` (a pipeline's command stack), then take the next job with its job hash, in one script:
        `((lane, job id) or None, the answer of the last command, the fenced answer)`. With `fenced` (a job record's
        key, and a lease's token and writes to it), those writes come first, fenced: when the fence refuses (answer
        0 or -1), nothing was applied or taken; without it the fenced answer is 1."""
        args: list[Any] = [self.age_s, self.job_prefix, "1"]
        if fenced is None:
            script, keys = APPLIED_THEN_TAKE_SCRIPT, [*self.lanes, self.claims]
        else:
            record, writes = fenced
            script, keys = FENCED_THEN_TAKE_SCRIPT, [record, *self.lanes, self.claims]
            args += [len(writes), *writes]
        lane, job_id, flat, last, answer = scripts.call(script, keys=keys, args=[*args, *script_groups(commands)],
                                                        client=connection)
        return self.taken([lane, job_id, flat] if lane else None), last, answer

    def taken(self, result: object) -> tuple[bytes, bytes] | None:
        """The take script's answer as `(lane, job id)` (None: nothing taken); keeps the job hash it read."""
        if not result:
            return None
        lane, job_id, *fetched = result  # type: ignore[misc]
        flat = fetched[0] if fetched else []
        self.job_hash = dict(zip(flat[::2], flat[1::2], strict=True))
        return (lane.encode() if isinstance(lane, str) else lane), job_id

    def take(self, connection: Redis, timeout: float | None) -> tuple[bytes, bytes] | None:
        """`take_once`, waiting up to `timeout` seconds for a job (None: not at all). None when none came."""
        deadline = time.monotonic() + (timeout or 0)
        while True:
            taken = self.take_once(connection)
            if taken is not None or timeout is None:
                return taken
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            connection.blpop([self.wake], timeout=min(left, WAKE_POLL_S))


def wake(pipe: Redis, key: str) -> None:
    """Tell a waiting child a lane has a job (on the pusher's pipeline, beside the push)."""
    pipe.lpush(key, 1)
    pipe.ltrim(key, 0, WAKE_TOKENS - 1)
