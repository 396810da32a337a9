"""Webhook deliveries waiting to be sent: one hash each, and a sorted set of when each is next tried.

A delivery is claimed by one process at a time (a WATCHed lease on its hash), so any number of pools may deliver;
one whose process died is tried again once its lease runs out. Records hold names and the body, never a secret.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

from redis import Redis, WatchError
from redis.client import Pipeline

from collector import defaults
from collector.store.records import Keys
from collector.types import iso


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One claimed delivery: what to send to which connection, and how often it was tried before."""

    id: str
    job_id: str                   # the job's id, or the process's when `subject` is "process"
    connection: str
    event: str
    body: dict[str, Any]
    tries: int
    subject: str = "job"


def queue(pipe: Pipeline | Redis, keys: Keys, *, job_id: str, connection: str, event: str,
          body: dict[str, Any], subject: str = "job") -> str:
    """Add a delivery due now (on `pipe`, inside the caller's transaction when it has one); returns its id."""
    delivery_id = uuid.uuid4().hex
    key = keys.delivery(delivery_id)
    pipe.hset(key, mapping={"job_id": job_id, "connection": connection, "event": event,
                            "body": json.dumps(body, default=str), "tries": 0, "created_at": iso(),
                            "claimed_until": 0, "subject": subject})
    pipe.expire(key, defaults.NOTIFY_KEEP_S)
    pipe.zadd(keys.deliveries_due(), {delivery_id: time.time()})
    return delivery_id


def claim_due(connection: Redis, keys: Keys, *, limit: int, lease_s: float = defaults.NOTIFY_LEASE_S,
              now: float | None = None) -> list[Delivery]:
    """Up to `limit` due deliveries this process now holds for `lease_s` (others skip them meanwhile)."""
    now = time.time() if now is None else now
    claimed: list[Delivery] = []
    for raw_id in connection.zrangebyscore(keys.deliveries_due(), "-inf", now, start=0, num=limit):
        delivery_id = raw_id.decode()
        found = _claim(connection, keys, delivery_id, now=now, lease_s=lease_s)
        if found is not None:
            claimed.append(found)
    return claimed


def _claim(connection: Redis, keys: Keys, delivery_id: str, *, now: float, lease_s: float) -> Delivery | None:
    key = keys.delivery(delivery_id)
    with connection.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            raw = {k.decode(): v.decode() for k, v in pipe.hgetall(key).items()}
            if not raw:  # expired: forget it
                pipe.multi()
                pipe.zrem(keys.deliveries_due(), delivery_id)
                pipe.execute()
                return None
            if float(raw.get("claimed_until") or 0) > now:
                pipe.unwatch()
                return None
            pipe.multi()
            pipe.hset(key, "claimed_until", now + lease_s)
            pipe.zadd(keys.deliveries_due(), {delivery_id: now + lease_s})
            pipe.execute()
        except WatchError:  # another process claimed it first
            return None
    return Delivery(id=delivery_id, job_id=raw["job_id"], connection=raw["connection"], event=raw["event"],
                    body=json.loads(raw["body"]), tries=int(raw.get("tries") or 0), subject=raw.get("subject", "job"))


def settle(connection: Redis, keys: Keys, delivery: Delivery, *, retry_at: float | None) -> None:
    """A tried delivery: gone when it was delivered or given up (`retry_at` None), else due again at `retry_at`."""
    key = keys.delivery(delivery.id)
    with connection.pipeline(transaction=True) as pipe:
        if retry_at is None:
            pipe.delete(key)
            pipe.zrem(keys.deliveries_due(), delivery.id)
        else:
            pipe.hset(key, mapping={"tries": delivery.tries + 1, "claimed_until": 0})
            pipe.zadd(keys.deliveries_due(), {delivery.id: retry_at})
        pipe.execute()


def release(connection: Redis, keys: Keys, delivery: Delivery) -> None:
    """Hand back a claimed delivery untried: due now, for whichever process looks next."""
    with connection.pipeline(transaction=True) as pipe:
        pipe.hset(keys.delivery(delivery.id), "claimed_until", 0)
        pipe.zadd(keys.deliveries_due(), {delivery.id: time.time()}, xx=True)
        pipe.execute()


def pending(connection: Redis, keys: Keys) -> int:
    """How many deliveries wait to be sent (for diagnostics and tests)."""
    return int(connection.zcard(keys.deliveries_due()))
