"""The demo platform through the standard platform tests of `collector.testkit`."""

from __future__ import annotations

from collector.testkit import DryRun, PlatformTests


class TestDemo(PlatformTests):
    platform_id = "demo"
    sample_settings = {"rows": 5}
    expected_result = {"rows": 5}
    expected_rows = {"original": 5, "processed": 5}
    invalid_settings = [{"rows": "five"}, {"delay_s": "slow"}, {"fail_at": 1.5}]

    def verify(self, run: DryRun) -> None:
        processed = run.outcome.datasets["processed"]
        assert [row["even"] for row in processed] == [False, True, False, True, False]
        assert run.outcome.record["progress"]["percent"] == 100.0
