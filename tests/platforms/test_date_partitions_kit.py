"""The date_partitions platform through the standard platform tests: a one-day range collects that day itself."""

from __future__ import annotations

from collector.testkit import DryRun, PlatformTests


class TestDatePartitions(PlatformTests):
    platform_id = "date_partitions"
    sample_settings = {"start_date": "2024-05-01", "end_date": "2024-05-01", "rows_per_day": 3}
    expected_result = {"days": 1, "rows": 3, "from": "2024-05-01", "to": "2024-05-01"}
    expected_rows = {"original": 3}
    invalid_settings = [{"rows_per_day": "many"}, {"delay_s": "slow"}, {"fail_on": "someday"}]

    def verify(self, run: DryRun) -> None:
        rows = run.outcome.datasets["original"]
        assert [row["n"] for row in rows] == [0, 1, 2] and {row["day"] for row in rows} == {"2024-05-01"}
        assert "children" not in run.outcome.record, "one day spawns nothing"


def test_ranges_that_are_backwards_or_too_long_are_refused_before_queueing() -> None:
    import pytest

    from collector.errors import ValidationError
    from collector.specs.job import validate_spec
    from collector.specs.registry import Registry

    registry = Registry.discover("platforms")
    for settings, words in (({"start_date": "2024-05-02", "end_date": "2024-05-01"}, "swap them"),
                            ({"start_date": "2024-01-01", "end_date": "2025-06-01"}, "over 366")):
        with pytest.raises(ValidationError) as refused:
            validate_spec({"platform_id": "date_partitions", "settings": settings}, registry)
        assert words in refused.value.details["settings"][0]
