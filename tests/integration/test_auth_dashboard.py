"""The dashboard behind the API tokens (bearer, or basic for browsers); its actions take same-site POSTs and `admin`."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterator

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from collector.app import create_app
from collector.config import Config
from tests.conftest import PoolProcess, ServedApp, wait_for

TOKEN = "dashboard-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()}
XHR = {"X-Requested-With": "XMLHttpRequest"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what a form on any page may post
EVIL = {"Origin": "https://evil.example"}


@pytest.fixture
def secured(config: Config) -> Iterator[ServedApp]:
    served = ServedApp(create_app(dataclasses.replace(config, api_tokens=f"me:admin:{TOKEN},viewer:read:{READER}")))
    yield served
    served.close()


def own_page(served: ServedApp) -> dict[str, str]:
    """What a browser adds to the dashboard's own XHR: the page's origin."""
    return {"Origin": served.url, **XHR}


def failed_job(served: ServedApp, redis_client: redis.Redis, start_pool: Callable[..., PoolProcess],
               headers: dict[str, str]) -> str:
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"fail_at": 1}},
                                  headers=headers)
    assert status == 202, body
    pool = start_pool(1)
    queue = Queue("collector", connection=redis_client, serializer=JSONSerializer)
    wait_for(lambda: queue.failed_job_registry.count == 1, what="the job to fail")
    pool.stop()
    return body["job_id"]


def test_dashboard_pages_need_the_token_and_browsers_get_a_basic_challenge(secured: ServedApp) -> None:
    for path in ("/rq/", "/rq/0/data/queues.json", "/rq/static/js/jquery-3.5.1.min.js"):
        status, body = secured.request("GET", path)
        assert status == 401 and body["error"] == "unauthorized", path
        assert secured.request("GET", path, headers=BASIC)[0] == 200, path
        assert secured.request("GET", path, headers=BEARER)[0] == 200, path


def test_requeue_all_refuses_get_even_with_a_token(
    secured: ServedApp, redis_client: redis.Redis, start_pool: Callable[..., PoolProcess]
) -> None:
    failed_job(secured, redis_client, start_pool, BEARER)
    queue = Queue("collector", connection=redis_client, serializer=JSONSerializer)
    status, body = secured.request("GET", "/rq/requeue/collector", headers=BEARER)
    assert status == 405 and "POST" in body["message"]
    assert secured.request("POST", "/rq/requeue/collector", raw=b"", headers=FORM)[0] == 401
    assert queue.failed_job_registry.count == 1 and queue.count == 0  # nothing requeued
    # A form on another site, posted through a browser that has the basic credentials:
    for headers in ({**BASIC, **FORM}, {**BASIC, **FORM, **EVIL}, {**BASIC, **XHR, **EVIL}):
        status, body = secured.request("POST", "/rq/requeue/collector", raw=b"", headers=headers)
        assert status in (400, 403), (headers, body)
    # Basic auth with the header but nothing showing it comes from the dashboard's own page:
    status, body = secured.request("POST", "/rq/requeue/collector", raw=b"", headers={**BASIC, **XHR, **FORM})
    assert status == 403 and "Origin" in body["message"]
    assert queue.failed_job_registry.count == 1
    status, body = secured.request("POST", "/rq/requeue/collector", raw=b"", headers={**BASIC, **FORM,
                                                                                     **own_page(secured)})
    assert status == 200 and body["count"] == 1
    assert queue.count == 1


def test_dashboard_actions_need_admin(secured: ServedApp, redis_client: redis.Redis,
                                      start_pool: Callable[..., PoolProcess]) -> None:
    job_id = failed_job(secured, redis_client, start_pool, BEARER)
    reader = {"Authorization": f"Bearer {READER}"}
    assert secured.request("GET", "/rq/0/data/queues.json", headers=reader)[0] == 200
    status, body = secured.request("POST", f"/rq/job/{job_id}/delete", raw=b"", headers={**reader, **XHR})
    assert status == 403 and body["details"]["required_scope"] == "admin"
    assert Queue("collector", connection=redis_client, serializer=JSONSerializer).failed_job_registry.count == 1


def test_actions_in_open_mode_still_need_post_the_xhr_header_and_this_site(
    served: ServedApp, redis_client: redis.Redis, start_pool: Callable[..., PoolProcess]
) -> None:
    job_id = failed_job(served, redis_client, start_pool, {})
    queue = Queue("collector", connection=redis_client, serializer=JSONSerializer)
    assert served.request("GET", "/rq/requeue/collector")[0] == 405
    assert served.request("POST", f"/rq/job/{job_id}/delete", raw=b"", headers=FORM)[0] == 400  # a form post
    assert served.request("POST", "/rq/queue/collector/failed/empty", raw=b"", headers=FORM)[0] == 400
    assert served.request("POST", "/rq/queue/collector/failed/empty", raw=b"", headers={**XHR, **EVIL})[0] == 403
    assert queue.failed_job_registry.count == 1
    status, _ = served.request("POST", f"/rq/job/{job_id}/requeue", raw=b"", headers={**FORM, **own_page(served)})
    assert status == 200 and queue.count == 1
    assert served.request("POST", "/rq/queue/collector/compact", raw=b"", headers={**BEARER, **XHR})[0] == 200
