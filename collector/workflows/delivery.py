"""Sending notifications: pools take the due deliveries in their maintenance tick and POST each one's JSON body to
its connection's base URL, signed `X-Collector-Signature: sha256=<HMAC-SHA256 of the body under the connection's
secret>`. A failed try is tried again with backoff, at most NOTIFY_ATTEMPTS times; every try is an event of the
job (`notify`). The connection's host is the operator's own destination; redirects elsewhere meet the egress policy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import redis

from collector import defaults
from collector.config import Config
from collector.errors import CollectorError, SettingError
from collector.masking import mask_text
from collector.resources import reach
from collector.store import deliveries
from collector.store.deliveries import Delivery
from collector.store.records import JobStore
from collector.types import iso
from collector.workflows.processes import note_history
from collector.workflows.waiting import callback_token

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Collector-Signature"


def sign(key: str, body: bytes) -> str:
    """The signature header's value for `body`: `sha256=` and the hex HMAC-SHA256 under `key`."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def backoff(tries: int) -> float:
    """Seconds before the next try of a delivery tried `tries` times."""
    return min(defaults.NOTIFY_BACKOFF_S * 2 ** max(tries - 1, 0), defaults.NOTIFY_BACKOFF_CAP_S)


def deliver_due(connection: redis.Redis, config: Config, *, budget_s: float = defaults.NOTIFY_BUDGET_S,
                limit: int = 20) -> int:
    """Send the due deliveries (no new one is started after `budget_s`); how many were tried."""
    store = JobStore(connection, config)
    started = time.monotonic()
    tried = 0
    for delivery in deliveries.claim_due(connection, store.keys, limit=limit):
        if time.monotonic() - started > budget_s:  # hand it back: the next tick (here or elsewhere) sends it
            deliveries.release(connection, store.keys, delivery)
            continue
        _deliver(connection, config, store, delivery)
        tried += 1
    return tried


def _deliver(connection: redis.Redis, config: Config, store: JobStore, delivery: Delivery) -> None:
    attempt = delivery.tries + 1
    outcome: dict[str, Any] = {"connection": delivery.connection, "event": delivery.event, "attempt": attempt,
                               "delivery": delivery.id}
    try:
        target = reach.current().connection(delivery.connection, kinds=("http",), setting="notify")
        if not target.signing_key:
            raise SettingError("notify", f"connection {delivery.connection!r} has no secret to sign with any more")
        body = json.dumps(_body(store, config, delivery), separators=(",", ":"), default=str).encode()
        client = target.http_client(
            headers={SIGNATURE_HEADER: sign(target.signing_key, body), "X-Collector-Event": delivery.event,
                     "X-Collector-Delivery": delivery.id},
            max_retries=0, timeout_s=defaults.NOTIFY_TIMEOUT_S,
        )
        client.request(target.base_url, method="POST", body=body)
    except CollectorError as exc:  # the client's errors name no secret (masked); a missing connection names it
        error = exc.message
    except Exception as exc:  # a broken delivery must not stop the pool's maintenance
        error = mask_text(f"{type(exc).__name__}: {exc}", reach.current().secrets())
    else:
        _record(connection, store, delivery, **outcome, outcome="delivered")
        deliveries.settle(connection, store.keys, delivery, retry_at=None)
        return
    if attempt >= defaults.NOTIFY_ATTEMPTS:
        _record(connection, store, delivery, **outcome, outcome="gave_up", error=error)
        deliveries.settle(connection, store.keys, delivery, retry_at=None)
        log.warning("%s %s: notification %s to %s given up after %d tries: %s", delivery.subject, delivery.job_id,
                    delivery.event, delivery.connection, attempt, error)
        return
    retry_at = time.time() + backoff(attempt)
    _record(connection, store, delivery, **outcome, outcome="retrying", error=error, retry_at=iso(retry_at))
    deliveries.settle(connection, store.keys, delivery, retry_at=retry_at)


def _record(connection: redis.Redis, store: JobStore, delivery: Delivery, /, **fields: Any) -> None:
    """A try, as an event of its job, or as an entry of its process's history."""
    if delivery.subject == "process":
        # the history's `event` says what the entry is; the notification's own event goes under `notification`
        note_history(connection, store.keys, delivery.job_id,
                     {**fields, "event": "notify", "notification": fields.get("event")})
    else:
        store.event(delivery.job_id, "notify", **fields)


def _body(store: JobStore, config: Config, delivery: Delivery) -> dict[str, Any]:
    """What is sent: the queued body, and for a job still waiting for input the link that resumes it (its token is
    derived here from the wait's nonce: Redis never holds it)."""
    body = {**delivery.body, "delivery": delivery.id}
    if delivery.event == "waiting" and delivery.subject == "job" and config.secret_key:
        record = store.read(delivery.job_id, "status", "wait_nonce")
        if record.get("status") == "waiting" and record.get("wait_nonce"):
            token = callback_token(config.secret_key, delivery.job_id, record["wait_nonce"])
            body["callback"] = f"/execution/callback?token={token}"
    return body
