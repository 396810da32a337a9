"""Relative dates, masking and sealing."""

from __future__ import annotations

import datetime as dt

import pytest

from collector.errors import ConfigError
from collector.masking import mask_text, mask_url
from collector.sealing import Sealer
from collector.types import Secret, iso, parse_date, parse_datetime

TODAY = dt.date(2024, 3, 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("today", TODAY),
        ("yesterday", dt.date(2024, 3, 9)),
        ("4 days back", dt.date(2024, 3, 6)),
        ("2 days ago", dt.date(2024, 3, 8)),
        ("1 week back", dt.date(2024, 3, 3)),
        ("3 weeks ago", dt.date(2024, 2, 18)),
        ("2023-12-31", dt.date(2023, 12, 31)),
    ],
)
def test_dates_accept_iso_and_relative_expressions(text: str, expected: dt.date) -> None:
    assert parse_date(text, today=TODAY) == expected


def test_a_bad_date_says_what_forms_are_accepted() -> None:
    with pytest.raises(ValueError, match="'N days back'"):
        parse_date("next tuesday", today=TODAY)


def test_datetimes_are_utc_aware() -> None:
    assert parse_datetime("2024-01-02T03:04:05").tzinfo is not None
    now = dt.datetime(2024, 3, 10, 15, tzinfo=dt.UTC)
    assert parse_datetime("yesterday", now=now) == dt.datetime(2024, 3, 9, tzinfo=dt.UTC)


def test_masking_hides_url_passwords_known_secrets_and_auth_headers() -> None:
    assert mask_url("mysql+pymysql://bob:s3cr3t@db:3306/x") == "mysql+pymysql://bob:***@db:3306/x"
    # A client takes a password with an `@` left unencoded: none of it shows, nor of a user name with one.
    assert mask_url("redis://:Op3rator@SecretTail@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask_url("at redis://us@er:p@ss@h/0 and http://u:pw@h/x") == "at redis://us@er:***@h/0 and http://u:***@h/x"
    assert mask_url("http://host:8080/a@b") == "http://host:8080/a@b"
    assert mask_url("see (redis://u:p@h/0) and\tREDIS://u:p@h") == "see (redis://u:***@h/0) and\tREDIS://u:***@h"
    # Glued to what comes before it (a quoted space, a digit, a long word), and within the quotes around it.
    for glued in ("dsn=%20postgresql://u:hunter2@db/x", "1redis://u:hunter2@h", "x" * 40 + "redis://u:hunter2@h"):
        assert "hunter2" not in mask_url(glued) and "***@" in mask_url(glued)
    assert mask_url('{"url":"http://u:p@h","mail":"me@example.com"}') == \
        '{"url":"http://u:***@h","mail":"me@example.com"}'
    assert mask_text("{'Authorization':   'Basic   dXNlcjpwYXNz'}") == "{'Authorization':   'Basic ***'}"
    text = "failed with token abc123 at postgresql://u:pw@h/db; headers {'Authorization': 'Bearer xyz'}"
    masked = mask_text(text, ["abc123"])
    for leaked in ("abc123", ":pw@", "xyz"):
        assert leaked not in masked


def test_secret_repr_is_masked_but_value_usable() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('***')" and secret + "!" == "hunter2!"


def test_sealing_round_trips_and_needs_the_same_key() -> None:
    token = Sealer("key-one").seal({"password": "hunter2"})
    assert "hunter2" not in token
    assert Sealer("key-one").unseal(token) == {"password": "hunter2"}
    with pytest.raises(ConfigError, match="same key"):
        Sealer("key-two").unseal(token)


def test_every_timestamp_has_one_form() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1700000000.1234) == "2023-11-14T22:13:20.123Z"
    now = iso()
    assert len(now) == 24 and now.endswith("Z") and dt.datetime.fromisoformat(now).tzinfo == dt.UTC
