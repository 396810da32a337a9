"""The storage integration fixtures skip on an unreachable database server, or fail when services are required."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.storage.conftest import mariadb_admin, postgres_admin

# Both outcomes are caught, so a helper that skips where it should fail makes the test fail, not skip.
OUTCOMES = (pytest.skip.Exception, pytest.fail.Exception)
ADMINS = [
    pytest.param(mariadb_admin, r"MariaDB at 127\.0\.0\.1:{port} \(user root\) is unreachable: ", id="mariadb"),
    pytest.param(postgres_admin, r"PostgreSQL at 127\.0\.0\.1:{port} \(user postgres\) is unreachable: ",
                 id="postgresql"),
]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections: bound (so no one else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("admin", "reason"), ADMINS)
def test_an_unreachable_server_skips_with_the_reason(
    admin: Callable[..., Any], reason: str, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLLECTOR_REQUIRE_SERVICES", raising=False)
    with pytest.raises(OUTCOMES, match=reason.format(port=closed_port)) as caught:
        admin(port=closed_port)
    assert caught.type is pytest.skip.Exception


@pytest.mark.parametrize(("admin", "reason"), ADMINS)
def test_an_unreachable_server_fails_when_services_are_required(
    admin: Callable[..., Any], reason: str, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTOR_REQUIRE_SERVICES", "1")
    with pytest.raises(OUTCOMES, match=reason.format(port=closed_port)) as caught:
        admin(port=closed_port)
    assert caught.type is pytest.fail.Exception
    assert "(COLLECTOR_REQUIRE_SERVICES=1)" in str(caught.value)
