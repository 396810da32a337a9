"""Priority lanes: which lane a pool child takes its next job from, and the take itself (a move into its claims).

Jobs wait in one list per priority (`high`, `normal`, `low`; `store/rq.py` names them). A child takes from the
first lane in `lane_order`: higher lanes first, except that a job waiting at the head of its lane counts one lane
higher for every `age_s` seconds it has waited, so a low job is never starved for good; between lanes of equal
rank the head that has waited longest goes first. The move itself is one Lua script (LMOVE from the first
non-empty lane of that order into the child's claims list), so a job is always in a lane or in one child's claims.
With every lane empty the child blocks on a wake-up list that each push to a lane feeds.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

from redis import Redis

PRIORITIES = ("high", "normal", "low")  # lanes, taken in this order
DEFAULT_PRIORITY = "normal"
WAKE_TOKENS = 256    # wake-ups kept for children not yet waiting; each only makes a child look again
WAKE_POLL_S = 5.0    # the longest a waiting child goes without looking again, whatever it was told

# KEYS: the lanes in the order to take from, then the claims list. Returns {lane, job id} or nil.
TAKE = """
local claims = KEYS[#KEYS]
for i = 1, #KEYS - 1 do
  local id = redis.call('LMOVE', KEYS[i], claims, 'LEFT', 'RIGHT')
  if id then return {KEYS[i], id} end
end
return false
"""


def lane_order(heads: Sequence[float | None], *, now: float, age_s: float) -> list[int]:
    """The lanes (indexes into `heads`, highest priority first) in the order to take from. `heads[i]`: when the
    job at the head of lane i was queued (unix seconds), None when the lane is empty. A head counts one lane
    higher per `age_s` it has waited (never above the top lane); equal ranks go to the head waiting longest;
    empty lanes come last, in their own order (a job may arrive meanwhile). `age_s` 0: strict priority."""
    def rank(index: int) -> tuple[int, float, int]:
        queued = heads[index]
        if queued is None:
            return len(heads), 0.0, index
        waited = max(0.0, now - queued)
        promoted = int(waited // age_s) if age_s > 0 else 0
        return max(0, index - promoted), -waited, index

    return sorted(range(len(heads)), key=rank)


def parse_enqueued_at(raw: bytes | str | None) -> float | None:
    """RQ's `enqueued_at` (`2026-01-02T03:04:05.123456Z`) as unix seconds; None when absent or unreadable."""
    if not raw:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    for form in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(text, form).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            continue
    return None


class Taker:
    """How one pool child takes jobs: lanes highest first, its claims list, the wake-up list, the aging step."""

    def __init__(self, lanes: Sequence[str], *, claims: str, wake: str, age_s: float, job_prefix: str) -> None:
        self.lanes, self.claims, self.wake, self.age_s = list(lanes), claims, wake, age_s
        self.job_prefix = job_prefix.encode()

    def order(self, connection: Redis) -> list[str]:
        """The lanes in the order to take from now (`lane_order` over the heads' queue times)."""
        with connection.pipeline(transaction=False) as pipe:
            for lane in self.lanes:
                pipe.lindex(lane, 0)
            heads = pipe.execute()
        waiting = [i for i, head in enumerate(heads) if head is not None]
        if len(waiting) < 2 or self.age_s <= 0:
            return [self.lanes[i] for i in waiting] + [lane for i, lane in enumerate(self.lanes) if i not in waiting]
        with connection.pipeline(transaction=False) as pipe:
            for i in waiting:
                pipe.hget(self.job_prefix + heads[i], "enqueued_at")
            times = dict(zip(waiting, pipe.execute(), strict=True))
        now = time.time()
        queued = [parse_enqueued_at(times[i]) if i in times else None for i in range(len(self.lanes))]
        # A head without a readable time (its hash gone) still waits: rank it by its own lane.
        queued = [now if q is None and i in times else q for i, q in enumerate(queued)]
        return [self.lanes[i] for i in lane_order(queued, now=now, age_s=self.age_s)]

    def take_once(self, connection: Redis) -> tuple[bytes, bytes] | None:
        """Move the next job into the claims list: `(lane, job id)`, or None when every lane is empty."""
        order = [lane.encode() if isinstance(lane, str) else lane for lane in self.order(connection)]
        result = connection.eval(TAKE, len(order) + 1, *order, self.claims)
        if not result:
            return None
        lane, job_id = result
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
