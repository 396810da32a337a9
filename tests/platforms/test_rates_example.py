"""The README's example platform and its test, as written there."""

from __future__ import annotations

from collector.testkit import RECORDED_URL, PlatformTests


class TestRates(PlatformTests):
    platform_id = "rates"
    package = "tests.devkit_platforms"   # in a project: the default, "platforms"
    sample_settings = {"base_url": RECORDED_URL, "api_key": "test-key", "day": "2024-05-31"}
    recorded_responses = {
        "GET /v1/rates/2024-05-31?base=EUR": {"rates": {"USD": 1.08, "GBP": 0.85}},
        "/v1/me": {"account": "acme"},
    }
    expected_result = {"currencies": 2}
    expected_rows = {"original": 1, "processed": 2}
    invalid_settings = [{"day": "someday"}, {"api_key": 42}]
