"""The test kit on sources behind HTTP and a login: recorded responses, secrets, `_check`."""

from __future__ import annotations

from collector.testkit import RECORDED_URL, DryRun, PlatformTests

PAGES = {
    "GET /v1/readings?city=Lisbon&page=1": {"readings": [{"f": 212}, {"f": 32}], "pages": 2, "next": 2},
    "GET /v1/readings?city=Lisbon&page=2": {"readings": [{"f": 50}], "pages": 2, "next": None},
    "/v1/ping": {"version": "3.1"},
}


class TestWeather(PlatformTests):
    platform_id = "weather"
    package = "tests.devkit_platforms"
    sample_settings = {"city": "Lisbon", "base_url": RECORDED_URL, "token": "tok-123456"}
    recorded_responses = PAGES
    expected_result = {"readings": 3}
    expected_rows = {"original": 3, "processed": 3}
    invalid_settings = [{"city": 7}]

    def verify(self, run: DryRun) -> None:
        assert [r["celsius"] for r in run.outcome.datasets["processed"]] == [100.0, 0.0, 10.0]
        assert run.server is not None
        assert [r["target"] for r in run.server.requests] == [
            "/v1/readings?city=Lisbon&page=1", "/v1/readings?city=Lisbon&page=2"]


class TestVault(PlatformTests):
    platform_id = "vault"
    package = "tests.devkit_platforms"
    sample_settings = {"username": "ada", "password": "open-sesame", "rows": 2}
    expected_result = {"rows": 2}


class TestVaultWithAWrongPassword(PlatformTests):
    """A `_check` that must fail: the kit asserts what the author says the check answers."""

    platform_id = "vault"
    package = "tests.devkit_platforms"
    sample_settings = {"username": "ada", "password": "not-it"}
    check_ok = False

    def test_dry_run_finishes(self, dry_run: DryRun) -> None:  # this run is meant to fail
        assert dry_run.outcome.status == "failed"
        assert dry_run.outcome.error is not None
        assert dry_run.outcome.error["message"] == "login refused for ada with password ***"


class TestHttpJsonOnRecordedResponses(PlatformTests):
    """A built-in platform whose HTTP goes through the egress policy: the kit allows its loopback server."""

    platform_id = "http_json"
    sample_settings = {"url": RECORDED_URL + "/v1/items", "record_path": "items"}
    recorded_responses = {"/v1/items": {"items": [{"id": 1, "tags": {"a": 1}}, {"id": 2}]}}
    expected_result = {"records": 2, "pages": 1}
    expected_rows = {"original": 1, "processed": 2}
