"""Log lines: text or one JSON object per line, tagged with job and platform; ctx.log lines on the job's events."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import fakeredis
import pytest

from collector.config import Config
from collector.errors import ConfigError
from collector.logs import job_event, setup
from collector.run.context import RunContext
from collector.store.events import JobEventsHandler, keep_platform_logs
from collector.store.records import JobStore, Keys

KEYS = Keys("collector")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_format_gives_one_object_per_line_with_job_tags(restore_root: None) -> None:
    stream = io.StringIO()
    setup(Config(log_format="json", log_level="debug"), stream=stream)
    job_event(logging.getLogger("collector.jobs"), "finished", job_id="abc", platform_id="demo", duration_s=0.5)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("it broke")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["job_id"] == "abc" and first["platform_id"] == "demo" and first["event"] == "finished"
    assert first["level"] == "INFO" and first["message"] == "job finished" and first["duration_s"] == 0.5
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]
    assert logging.getLogger().level == logging.DEBUG


def test_text_format_appends_the_tags(restore_root: None) -> None:
    stream = io.StringIO()
    setup(Config(), stream=stream)
    job_event(logging.getLogger("collector.jobs"), "started", job_id="abc", platform_id="demo")
    assert stream.getvalue().rstrip().endswith("job started job_id=abc platform_id=demo event=started")


def test_bad_format_or_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="COLLECTOR_LOG_FORMAT='xml'"):
        setup(Config(log_format="xml"))
    with pytest.raises(ConfigError, match="COLLECTOR_LOG_LEVEL='loud'"):
        setup(Config(log_level="loud"))


def test_ctx_log_lines_go_to_the_events_stream_masked_and_capped(fake_redis: fakeredis.FakeRedis,
                                                                 unit_config: Config) -> None:
    handler = keep_platform_logs(fake_redis, KEYS)
    handler.per_job = 3
    logger = logging.getLogger("platforms.demo")
    logger.setLevel(logging.INFO)
    try:
        ctx = RunContext(job_id="j1", platform_id="demo", attempt=1, store=JobStore(fake_redis, unit_config),
                         interval_s=1.0, secrets=["hunter2"])
        for n in range(5):
            ctx.log.info("page %d fetched with hunter2", n)
        entries = [json.loads(raw) for raw in fake_redis.lrange(KEYS.events("j1"), 0, -1)]
        messages = [entry["message"] for entry in entries]
        assert len(messages) == 4 and "page 0 fetched with ***" in messages[0]
        assert "hunter2" not in "".join(messages) and "more than 3 log lines" in messages[-1]
        assert entries[0]["type"] == "log" and entries[0]["level"] == "INFO"
        shown = JobStore(fake_redis, unit_config).events("j1")[0]  # as GET /execution/events answers
        assert shown["type"] == "log" and shown["level"] == "INFO" and "page 0 fetched with ***" in shown["message"]
        logging.getLogger("platforms.demo").info("no job here")  # lines without a job are not copied
        assert fake_redis.llen(KEYS.events("j1")) == 4
    finally:
        logging.getLogger("platforms").removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert not [h for h in logging.getLogger("platforms").handlers if isinstance(h, JobEventsHandler)]
