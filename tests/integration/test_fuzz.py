"""Schemathesis against the served API and its own /openapi.json: no 5xx, every answer as documented."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from collector.app import create_app
from collector.config import Config
from tests.conftest import ServedApp
from tests.secret_platforms import LEAKY, VAULTED, install_vault, make_package

CASES: Counter[str] = Counter()
STATUSES: Counter[tuple[str, int]] = Counter()
TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Requested-With": "schemathesis"}
MAX_EXAMPLES = 100  # per operation; the whole fuzz run stays around a minute


@pytest.fixture(scope="module", autouse=True)
def report_cases() -> Iterator[None]:
    yield
    print(f"\nschemathesis: {sum(CASES.values())} cases over {len(CASES)} operations: {dict(CASES)}")
    print(f"schemathesis: answers by (run, status): {dict(sorted(STATUSES.items()))}")
    if CASES:  # the token really got through: the secured run had successes, and 4xx answers that are not 401
        assert STATUSES[("token", 202)] and STATUSES[("token", 200)] and not STATUSES[("token", 401)]


@pytest.fixture
def config(config: Config) -> Config:
    """No worker runs here: a connection check gives up (504, as documented) at once instead of after seconds."""
    return dataclasses.replace(config, check_timeout_s=0.05)


def loaded(url: str, **kwargs: Any) -> schemathesis.schemas.BaseSchema:
    """The served document; 413 (a generated body over the size limit) counts as a proper rejection."""
    api = schemathesis.openapi.from_url(url + "/openapi.json", **kwargs)
    rejection = api.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    server_error = api.config.checks.not_a_server_error  # 504: no worker answered a check (none runs here)
    server_error.expected_statuses = [*server_error.expected_statuses, "504"]
    return api


@pytest.fixture
def api_schema(served: ServedApp) -> schemathesis.schemas.BaseSchema:
    return loaded(served.url)


@pytest.fixture
def secured_schema(config: Config) -> Iterator[schemathesis.schemas.BaseSchema]:
    served = ServedApp(create_app(dataclasses.replace(config, api_tokens=f"fuzz:admin:{TOKEN}")))
    try:
        api = loaded(served.url, headers=AUTH)
        # The test sends the token itself; left on, schemathesis would make up Authorization headers of its own.
        api.config.generation.update(with_security_parameters=False)
        yield api
    finally:
        served.close()


@pytest.fixture
def storage_schema(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
                   ) -> Iterator[schemathesis.schemas.BaseSchema]:
    """Platforms with secrets and a storage target (a test backend), so storage specs are fuzzed too."""
    install_vault(monkeypatch, request)
    monkeypatch.syspath_prepend(str(tmp_path))
    package = make_package(tmp_path, "fuzzplatforms", vaulted=VAULTED, leaky=LEAKY)
    served = ServedApp(create_app(dataclasses.replace(config, platforms_package=package), dashboard=False))
    try:
        yield loaded(served.url)
    finally:
        served.close()


schema = schemathesis.pytest.from_fixture("api_schema")
secured = schemathesis.pytest.from_fixture("secured_schema")
with_storage = schemathesis.pytest.from_fixture("storage_schema")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])


@schema.parametrize()
@SETTINGS
def test_the_api_keeps_its_contract(case: schemathesis.Case) -> None:
    CASES[f"{case.method} {case.path}"] += 1
    STATUSES[("open", case.call_and_validate(checks=CHECKS).status_code)] += 1


@secured.parametrize()
@settings(SETTINGS, max_examples=MAX_EXAMPLES // 5)
def test_the_api_keeps_its_contract_behind_tokens(case: schemathesis.Case) -> None:
    CASES[f"{case.method} {case.path} (token)"] += 1
    STATUSES[("token", case.call_and_validate(checks=CHECKS, headers=AUTH).status_code)] += 1


@with_storage.parametrize()
@settings(SETTINGS, max_examples=MAX_EXAMPLES // 3)
def test_storage_specs_keep_the_contract(case: schemathesis.Case) -> None:
    CASES[f"{case.method} {case.path} (storage)"] += 1
    STATUSES[("storage", case.call_and_validate(checks=CHECKS).status_code)] += 1
