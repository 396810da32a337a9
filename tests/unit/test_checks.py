"""Connection checks of a platform and its storage targets, in-process: what passes, fails, has no check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import storage
from collector.specs.job import validate_spec
from collector.specs.registry import Registry
from collector.specs.schema import storage_backends
from collector.submit.checks import check_spec_locally
from storage.base import Storage


@pytest.fixture
def kit_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    monkeypatch.setattr(storage, "BACKEND_MODULES", (*storage.BACKEND_MODULES, "tests.devkit_platforms._storage"))
    storage_backends.cache_clear()
    yield Registry.discover("tests.devkit_platforms")
    storage_backends.cache_clear()


def check(registry: Registry, password: str, target: dict | None = None) -> dict:
    settings = {"username": "ada", "password": password, **({"storage": target} if target else {})}
    return check_spec_locally(validate_spec({"platform_id": "vault", "settings": settings}, registry))


def test_storage_and_platform_checks_all_pass(kit_registry: Registry) -> None:
    answer = check(kit_registry, "open-sesame", {"type": "ledger", "settings": {"token": "letmein"}})
    assert answer == {
        "ok": True,
        "message": "storage (ledger): ledger main is writable; platform vault: logged in as ada",
        "checks": [
            {"name": "storage (ledger)", "ok": True, "message": "ledger main is writable"},
            {"name": "platform vault", "ok": True, "message": "logged in as ada"},
        ],
    }


def test_a_failing_storage_check_fails_the_answer_with_its_secret_masked(kit_registry: Registry) -> None:
    answer = check(kit_registry, "open-sesame", {"type": "ledger", "settings": {"token": "guess123"}})
    assert answer["ok"] is False
    assert answer["message"] == "storage (ledger): PermissionError: ledger main refused token ***"
    assert [c["ok"] for c in answer["checks"]] == [False, True]


def test_a_backend_without_check_says_so(kit_registry: Registry) -> None:
    answer = check(kit_registry, "open-sesame", {"type": "plain", "settings": {}})
    assert answer["ok"] is True
    assert answer["checks"][0] == {"name": "storage (plain)", "ok": None, "message": "no check"}
    assert "no connection check" in Storage()._check()


def test_a_platform_that_cannot_be_built_is_a_failed_check(kit_registry: Registry) -> None:
    spec = validate_spec({"platform_id": "vault", "settings": {"username": "ada", "password": "x"}}, kit_registry)
    spec.settings["rows"] = "three"  # as a record edited by hand would hold
    answer = check_spec_locally(spec)
    assert answer["ok"] is False and answer["message"].startswith("platform 'vault' could not be built")
