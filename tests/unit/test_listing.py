"""`GET /execution/list` on fakeredis: newest first, pages that join up, filters, bad parameters, index trimming."""

from __future__ import annotations

import fakeredis
from flask.testing import FlaskClient

from collector.config import Config
from collector.store.index import horizon_s
from collector.store.records import Keys

KEYS = Keys("collector")


def submit(client: FlaskClient, rows: int = 1) -> str:
    answer = client.post("/execution/run", json={"platform_id": "demo", "settings": {"rows": rows}})
    assert answer.status_code == 202
    return answer.get_json()["job_id"]


def test_jobs_come_newest_first_in_pages_that_join_up(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    ids = [submit(client, rows=n) for n in range(7)]
    # Three jobs created in the same instant: ties must neither repeat nor vanish across pages.
    score = fake_redis.zscore(KEYS.jobs_index(), ids[3])
    fake_redis.zadd(KEYS.jobs_index(), {ids[4]: score, ids[5]: score})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "/execution/list?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(query).get_json()
        assert len(body["jobs"]) <= 2
        seen += [job["job_id"] for job in body["jobs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    assert seen[0] == ids[6] and seen[-1] == ids[0]
    first = client.get("/execution/list?limit=1").get_json()["jobs"][0]
    assert first["status"] == "queued" and first["platform_id"] == "demo" and first["created_at"]


def test_filters_by_status_and_platform(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    ids = [submit(client) for _ in range(5)]
    fake_redis.hset(KEYS.job(ids[1]), "status", "failed")
    fake_redis.hset(KEYS.job(ids[3]), "status", "failed")
    body = client.get("/execution/list?status=failed").get_json()
    assert [j["job_id"] for j in body["jobs"]] == [ids[3], ids[1]] and body["next_cursor"] is None
    assert client.get("/execution/list?platform_id=demo").get_json()["jobs"][0]["job_id"] == ids[4]
    assert client.get("/execution/list?platform_id=other").get_json()["jobs"] == []


def test_expired_records_leave_the_index(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    ids = [submit(client) for _ in range(3)]
    fake_redis.delete(KEYS.job(ids[0]))
    body = client.get("/execution/list").get_json()
    assert [j["job_id"] for j in body["jobs"]] == [ids[2], ids[1]]
    assert fake_redis.zscore(KEYS.jobs_index(), ids[0]) is None


def test_writes_trim_entries_older_than_a_record_can_live(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, unit_config: Config
) -> None:
    fake_redis.zadd(KEYS.jobs_index(), {"ancient": 1.0})
    submit(client)
    assert fake_redis.zscore(KEYS.jobs_index(), "ancient") is None
    assert horizon_s(unit_config) > unit_config.failed_record_ttl_s
    assert fake_redis.zcard(KEYS.jobs_index()) == 1


NAN_CURSOR = "bmFuOmFiYw"  # "nan:abc": a cursor's score must be a finite number


def test_bad_parameters_get_a_clear_400(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    for query, field in [("limit=0", "limit"), ("limit=abc", "limit"), ("limit=100000", "limit"),
                         ("status=sleeping", "status"), ("cursor=%%%", "cursor"), ("cursor=bm9jb2xvbg", "cursor"),
                         (f"cursor={NAN_CURSOR}", "cursor"), ("limit=", "limit"), ("platform_id=../x", "platform_id"),
                         ("platform_id=demo%0A", "platform_id")]:
        answer = client.get(f"/execution/list?{query}")
        body = answer.get_json()
        assert answer.status_code == 400, query
        assert body["error"] == "bad_request" and field in body["details"] and field in body["message"]
