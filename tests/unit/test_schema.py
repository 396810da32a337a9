"""Settings schemas built from `__init__` signatures: types, defaults, choices, secrets, errors."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import pytest
from marshmallow import ValidationError

from collector.errors import ContractError
from collector.specs.schema import build_settings_schema, flatten_errors
from collector.types import Secret


class Everything:
    def __init__(
        self,
        name: str,
        count: int,
        ratio: float = 0.5,
        flag: bool = False,
        day: dt.date = "yesterday",
        moment: dt.datetime | None = None,
        tags: list[str] | None = None,
        extra: dict | None = None,
        color: Literal["red", "blue"] = "red",
        password: Secret | None = None,
    ) -> None:
        pass


def describe(cls: type) -> dict[str, dict]:
    return {s["name"]: s for s in (x.describe() for x in build_settings_schema(cls, where="t").settings)}


def test_every_supported_type_is_described_with_required_default_and_choices() -> None:
    shown = describe(Everything)
    assert shown["name"] == {"name": "name", "type": "string", "required": True, "secret": False}
    assert shown["count"]["type"] == "integer" and shown["count"]["required"] is True
    assert shown["ratio"] == {"name": "ratio", "type": "number", "required": False, "default": 0.5, "secret": False}
    assert shown["flag"]["type"] == "boolean"
    assert shown["day"]["type"] == "date" and shown["day"]["default"] == "yesterday"
    assert shown["moment"]["type"] == "datetime" and shown["moment"]["default"] is None
    assert shown["tags"]["type"] == "list" and shown["tags"]["items"] == "string"
    assert shown["extra"]["type"] == "object"
    assert shown["color"]["choices"] == ["red", "blue"]
    assert shown["password"]["secret"] is True


def test_load_converts_values_and_resolves_relative_dates() -> None:
    schema = build_settings_schema(Everything, where="t").schema()
    loaded = schema.load({"name": "x", "count": 3, "day": "4 days back", "password": "hunter2", "ratio": 2})
    assert loaded["day"] == dt.date.today() - dt.timedelta(days=4)
    assert isinstance(loaded["password"], Secret) and loaded["password"] == "hunter2"
    assert "hunter2" not in repr(loaded)
    assert loaded["color"] == "red" and loaded["flag"] is False


def test_all_errors_are_reported_at_once_with_their_paths() -> None:
    schema = build_settings_schema(Everything, where="t").schema()
    with pytest.raises(ValidationError) as caught:
        schema.load({"count": "3", "ratio": "high", "flag": "yes", "color": "green", "day": "someday", "bogus": 1})
    errors = flatten_errors(caught.value.messages, "settings")
    assert set(errors) == {
        "settings.name", "settings.count", "settings.ratio", "settings.flag", "settings.color", "settings.day",
        "settings.bogus",
    }
    assert "someday" in errors["settings.day"][0]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_numbers_reject_nan_infinity_and_booleans(value: object) -> None:
    schema = build_settings_schema(Everything, where="t").schema()
    with pytest.raises(ValidationError) as caught:
        schema.load({"name": "x", "count": 1, "ratio": value})
    assert "ratio" in caught.value.messages


def test_class_constants_are_not_settings() -> None:
    class WithConstants:
        PAGE_SIZE = 500

        def __init__(self, token: str) -> None:
            pass

    assert [s.name for s in build_settings_schema(WithConstants, where="t").settings] == ["token"]


def test_unannotated_and_unsupported_parameters_break_the_contract_by_name() -> None:
    class Unannotated:
        def __init__(self, rows=1) -> None:  # type: ignore[no-untyped-def]
            pass

    class Unsupported:
        def __init__(self, when: set[int]) -> None:
            pass

    with pytest.raises(ContractError, match="'rows' has no type annotation"):
        build_settings_schema(Unannotated, where="platforms/x.py")
    with pytest.raises(ContractError, match="'when'"):
        build_settings_schema(Unsupported, where="platforms/x.py")


def test_relative_date_defaults_are_resolved_when_loaded() -> None:
    loaded = build_settings_schema(Everything, where="t").schema().load({"name": "x", "count": 1})
    assert loaded["day"] == dt.date.today() - dt.timedelta(days=1)
