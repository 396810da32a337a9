"""The run key that makes a Redis data loss visible, on fakeredis; time-carrying job ids."""

from __future__ import annotations

import logging
import time
import uuid

import fakeredis
import pytest
import redis

from collector.store.dataloss import LossWatch, persistence, volatile_by_design
from collector.store.records import Keys
from collector.types import job_id_time, new_job_id

KEYS = Keys("collector")
WEEK = 7 * 24 * 3600


def test_job_ids_are_uuid7_and_tell_when_they_were_made() -> None:
    made = new_job_id(1_800_000_000.123)
    parsed = uuid.UUID(made)
    assert len(made) == 32 and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert job_id_time(made) == pytest.approx(1_800_000_000.123, abs=0.001)
    assert new_job_id(1.0) < new_job_id(2.0), "ids sort by creation"
    assert job_id_time(uuid.uuid4().hex) is None  # the random ids of earlier versions tell nothing
    assert job_id_time("local-" + made) is None and job_id_time(made.upper()) is None


def test_a_first_look_writes_the_run_key_and_start_up_writes_nothing(fake_redis: fakeredis.FakeRedis) -> None:
    watch = LossWatch(fake_redis, KEYS)
    watch.check_quietly()
    assert fake_redis.dbsize() == 0 and watch.known is None
    watch.check()
    assert watch.known == fake_redis.hget(KEYS.run(), "id").decode()
    other = LossWatch(fake_redis, KEYS)
    other.check_quietly()
    assert other.known == watch.known, "a later process adopts the run"
    assert watch.report() == {"detected": False, "run": watch.known}


def test_a_gone_run_key_is_noticed_once_recorded_and_told_to_every_process(
    fake_redis: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = LossWatch(fake_redis, KEYS), LossWatch(fake_redis, KEYS)
    first.check()
    second.check()
    lost_run = first.known
    before = new_job_id(time.time() - 60)
    fake_redis.flushall()
    with caplog.at_level(logging.INFO, logger="collector.store.dataloss"):
        first.check()
        second.check()
        first.check()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and lost_run in errors[0].getMessage(), "logged once, by the process that noticed"
    assert first.known == second.known != lost_run
    report = second.report()
    assert report["detected"] is True and report["losses"] == [{"noticed_at": report["noticed_at"],
                                                                 "lost_run": lost_run}]
    assert second.lost_job(before, kept_s=WEEK)["lost_run"] == lost_run
    assert second.lost_job(new_job_id(), kept_s=WEEK) is None, "made after the loss: never existed"
    assert second.lost_job(new_job_id(time.time() - 2 * WEEK), kept_s=WEEK) is None, "would have expired anyway"
    assert second.lost_job(uuid.uuid4().hex, kept_s=WEEK) is None


def test_losses_are_kept_to_the_last_twenty(fake_redis: fakeredis.FakeRedis) -> None:
    watch = LossWatch(fake_redis, KEYS)
    watch.check()
    for _ in range(25):
        fake_redis.delete(KEYS.run())
        watch.check()
    assert len(watch.losses()) == 20


def test_persistence_is_read_from_config_or_info_or_left_unknown() -> None:
    class Server:
        def __init__(self, config: dict | None, info: dict | None) -> None:
            self.config, self._info = config, info

        def config_get(self, name: str) -> dict:
            if self.config is None:
                raise redis.ResponseError("unknown command 'CONFIG'")
            return {name: self.config[name]}

        def info(self, section: str) -> dict | None:
            if self._info is None:
                raise redis.ResponseError("unknown command 'INFO'")
            return self._info

    assert persistence(Server({"save": "", "appendonly": "no"}, None)) is False
    assert persistence(Server({"save": "3600 1", "appendonly": "no"}, None)) is True
    assert persistence(Server({"save": "", "appendonly": "yes"}, None)) is True
    assert persistence(Server(None, {"aof_enabled": 1})) is True
    assert persistence(Server(None, {"aof_enabled": 0})) is None
    assert persistence(Server(None, None)) is None


def test_a_redis_volatile_by_design_is_noted_without_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = fakeredis.FakeRedis()
    monkeypatch.setattr("collector.store.dataloss.persistence", lambda connection: False)  # no RDB, no AOF
    keys = Keys("collector")
    with caplog.at_level(logging.INFO, logger="collector"):
        LossWatch(connection, keys, redis_url="redis://h/0").check()
    assert [r.levelname for r in caplog.records if "keeps no data on disk" in r.getMessage()] == ["WARNING"]
    caplog.clear()
    volatile_by_design(connection, keys)
    with caplog.at_level(logging.INFO, logger="collector"):
        LossWatch(connection, keys, redis_url="redis://h/0").check()
    assert [r.levelname for r in caplog.records if "keeps no data on disk" in r.getMessage()] == ["INFO"]
