"""`collector schedules` against a served API: create, list (table and JSON), show, delete, clear errors."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.test_cli_client import cli


def test_schedules_are_listed_shown_and_deleted_from_the_command_line(served: Any) -> None:
    assert cli(served.url, "schedules").stdout.strip() == "no schedules"
    body = {"name": "hourly demo", "cron": "0 * * * *", "spec": {"platform_id": "demo", "settings": {"rows": 3}}}
    made = cli(served.url, "schedules", "create", "-", "--json", stdin=json.dumps(body))
    assert made.returncode == 0, made.stderr
    schedule_id = json.loads(made.stdout)["id"]

    table = cli(served.url, "schedules").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "WHEN", "NEXT", "RUN", "RUNS", "LAST", "JOB"]
    assert table[1].startswith(schedule_id) and "hourly demo" in table[1] and "0 * * * *" in table[1]
    listed = json.loads(cli(served.url, "schedules", "list", "--json").stdout)
    assert [s["id"] for s in listed["schedules"]] == [schedule_id]
    shown = cli(served.url, "schedules", "show", schedule_id).stdout
    assert '"rows": 3' in shown and "every" not in shown and "0 * * * *" in shown

    deleted = cli(served.url, "schedules", "delete", schedule_id)
    assert deleted.returncode == 0 and f"schedule {schedule_id} deleted" in deleted.stdout
    assert json.loads(cli(served.url, "schedules", "--json").stdout) == {"schedules": []}
    missing = cli(served.url, "schedules", "delete", schedule_id)
    assert missing.returncode == 2 and f"no schedule {schedule_id!r}" in missing.stderr
    refused = cli(served.url, "schedules", "create", "-", stdin=json.dumps({"cron": "nope", "spec": {}}))
    assert refused.returncode == 2 and "cron" in refused.stderr


def test_a_schedule_is_paused_and_resumed_from_the_command_line(served: Any) -> None:
    body = {"name": "daily demo", "interval_s": 86400, "spec": {"platform_id": "demo", "settings": {}}}
    schedule_id = json.loads(cli(served.url, "schedules", "create", "-", "--json", stdin=json.dumps(body)).stdout)["id"]
    paused = cli(served.url, "schedules", "pause", schedule_id)
    assert paused.returncode == 0 and f"schedule {schedule_id} paused: paused" in paused.stdout
    row = cli(served.url, "schedules").stdout.splitlines()[1]
    assert row.startswith(schedule_id) and "paused" in row
    assert json.loads(cli(served.url, "schedules", "show", schedule_id, "--json").stdout)["next_run_at"] is None
    resumed = cli(served.url, "schedules", "resume", schedule_id, "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["paused"] is False
    assert json.loads(resumed.stdout)["next_run_at"], "resumed: it has a next run again"
    missing = cli(served.url, "schedules", "pause", "nosuchschedule")
    assert missing.returncode == 2 and "no schedule 'nosuchschedule'" in missing.stderr
