"""The standard tests of a platform: subclass `PlatformTests` in a test file and pytest runs them all.

    from collector.testkit import PlatformTests

    class TestAcmeAds(PlatformTests):
        platform_id = "acme_ads"
        sample_settings = {"start_date": "2024-05-01", "password": "example"}

They check that the file is discovered and follows the contract, that its settings schema publishes and
validates, and run `_run` dry — through the local runner (`collector run`'s), on an in-process fake Redis,
against responses the author recorded — checking the result, the datasets and that no secret leaks.
Needs pytest (a test dependency; the service never imports this module).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import fakeredis
import pytest

from collector import egress
from collector.config import Config
from collector.devkit.local import LocalOutcome, check_spec, local_runtime, run_local
from collector.devkit.recorded import RECORDED_HOST, RECORDED_URL, RecordedResponses, substitute
from collector.errors import ValidationError
from collector.specs.job import JobSpec
from collector.specs.registry import PlatformSpec, Registry
from collector.specs.secrets import secret_values, split_secrets
from collector.submit.checks import check_spec_locally

__all__ = ["RECORDED_URL", "DryRun", "PlatformTests", "RecordedResponses", "redis_contents"]


@dataclasses.dataclass
class DryRun:
    """A dry run's outcome, the fake Redis it ran on, what it logged and the settings it ran with."""

    outcome: LocalOutcome
    connection: fakeredis.FakeRedis
    log_text: str
    spec: JobSpec
    server: RecordedResponses | None

    def redis_contents(self) -> bytes:
        """Every key and value the run left in Redis, to search for what must not be there."""
        return redis_contents(self.connection)


def redis_contents(client: Any) -> bytes:
    """Every key and value in a Redis database as one blob, to search for secrets in plain text."""
    readers = {
        b"string": client.get, b"hash": client.hgetall, b"list": lambda k: client.lrange(k, 0, -1),
        b"set": client.smembers, b"zset": lambda k: client.zrange(k, 0, -1), b"stream": client.xrange,
        b"none": lambda k: None,  # a key can go between KEYS and TYPE (RQ deletes its own as it works)
    }
    return b"\n".join(key + b"=" + repr(readers[client.type(key)](key)).encode() for key in client.keys("*"))


class PlatformTests:
    """Subclass as `Test<YourPlatform>` and set the class attributes; override `replay` and `verify` if needed."""

    platform_id: ClassVar[str] = ""
    package: ClassVar[str] = "platforms"           # where the platform file lives (COLLECTOR_PLATFORMS_PACKAGE)
    sample_settings: ClassVar[Mapping[str, Any]] = {}    # the dry run's settings; "{recorded_url}" is replaced
    # Path (or "METHOD /path?query") → response the fake HTTP source answers: a dict/list (sent as JSON),
    # str/bytes, or (status, body). Empty: no server is started.
    recorded_responses: ClassVar[Mapping[str, Any]] = {}
    expected_result: ClassVar[Any] = None          # compared with `_run`'s return value when not None
    expected_rows: ClassVar[Mapping[str, int]] = {}     # dataset name → number of rows the dry run keeps
    invalid_settings: ClassVar[list[Mapping[str, Any]]] = []  # each must be refused (merged into the sample)
    check_ok: ClassVar[bool | None] = True         # what `_check` answers in the dry run (None: do not test it)

    def replay(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patch what the platform calls out to (an SDK client, files, the clock) with recorded data."""

    def verify(self, run: DryRun) -> None:
        """More assertions about the dry run, for the platform's own rules."""

    # -- fixtures ------------------------------------------------------------------------------------

    @pytest.fixture
    def kit_registry(self) -> Registry:
        if not self.platform_id:
            pytest.fail(f"{type(self).__name__} sets no platform_id; set it to the platform file's name")
        return Registry.discover(self.package)

    @pytest.fixture
    def platform(self, kit_registry: Registry) -> PlatformSpec:
        if self.platform_id in kit_registry.broken:
            pytest.fail(f"{self.package}/{self.platform_id}.py failed to load: {kit_registry.broken[self.platform_id]}")
        spec = kit_registry.get(self.platform_id)
        if spec is None:
            found = sorted(kit_registry.platforms)
            pytest.fail(f"no platform {self.platform_id!r} in package {self.package!r}; it has {found}")
        return spec

    @pytest.fixture
    def recorded(self) -> Iterator[RecordedResponses | None]:
        if not self.recorded_responses:
            yield None
            return
        # The recorded server listens on loopback, which jobs reach only where the operator allows it.
        with RecordedResponses(self.recorded_responses) as server, egress.installed(
                egress.EgressPolicy.from_config(Config(egress_allow=RECORDED_HOST))):
            yield server

    @pytest.fixture
    def dry_run(
        self,
        platform: PlatformSpec,
        kit_registry: Registry,
        recorded: RecordedResponses | None,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        tmp_path: Path,
    ) -> DryRun:
        self.replay(monkeypatch)
        body = self.body(recorded)
        connection = fakeredis.FakeRedis()
        # A data root of its own: files the dry run writes (storage targets) go to the test's temporary folder.
        config = Config(platforms_package=self.package, data_dir=str(tmp_path / "data"),
                        egress_allow=RECORDED_HOST if recorded else None)
        runtime = local_runtime(config, connection=connection, registry=kit_registry)
        runtime.throttled = False  # recorded answers: no source whose rate limit to keep to
        caplog.set_level("DEBUG")
        outcome = run_local(body, runtime)
        return DryRun(outcome, connection, caplog.text, check_spec(body, kit_registry), recorded)

    def body(self, recorded: RecordedResponses | None = None, **overrides: Any) -> dict[str, Any]:
        """The dry run's job spec, with the recorded server's address filled in."""
        settings = {**self.sample_settings, **overrides}
        if recorded is not None:
            settings = substitute(settings, recorded.url)
        return {"platform_id": self.platform_id, "settings": settings}

    # -- the standard tests --------------------------------------------------------------------------

    def test_is_discovered(self, platform: PlatformSpec) -> None:
        assert platform.id == self.platform_id

    def test_follows_the_contract(self, platform: PlatformSpec) -> None:
        assert platform.description.strip(), "say in the class docstring what the platform collects"
        assert callable(getattr(platform.cls, "_run", None)), "define _run(self, ctx)"
        described = platform.describe()
        assert json.loads(json.dumps(described)) == described, "the settings must describe themselves as JSON"
        for setting in described["settings"]:
            assert {"name", "type", "required", "secret"} <= set(setting), setting

    def test_sample_settings_are_valid(self, kit_registry: Registry, recorded: RecordedResponses | None) -> None:
        try:
            check_spec(self.body(recorded), kit_registry)
        except ValidationError as exc:
            pytest.fail(f"sample_settings are refused: {exc.details}")

    def test_unknown_settings_are_refused(self, kit_registry: Registry, platform: PlatformSpec) -> None:
        with pytest.raises(ValidationError) as refused:
            check_spec(self.body(no_such_setting_ever=1), kit_registry)
        assert "settings.no_such_setting_ever" in refused.value.details

    def test_required_settings_are_required(self, kit_registry: Registry, platform: PlatformSpec) -> None:
        required = {f"settings.{s.name}" for s in platform.settings.settings if s.required}
        if not required:
            pytest.skip("the platform has no required setting")
        with pytest.raises(ValidationError) as refused:
            check_spec({"platform_id": self.platform_id, "settings": {}}, kit_registry)
        assert required <= set(refused.value.details)

    def test_invalid_settings_are_refused(self, kit_registry: Registry, platform: PlatformSpec) -> None:
        if not self.invalid_settings:
            pytest.skip("set invalid_settings to test that bad values are refused")
        for bad in self.invalid_settings:
            with pytest.raises(ValidationError) as refused:
                check_spec(self.body(**bad), kit_registry)
            assert {f"settings.{name}" for name in bad} & set(refused.value.details), (bad, refused.value.details)

    def test_dry_run_finishes(self, dry_run: DryRun) -> None:
        outcome = dry_run.outcome
        if not outcome.ok:
            error = outcome.error or {}
            pytest.fail(f"the dry run {outcome.status}: {error.get('type')}: {error.get('message')}\n"
                        f"{error.get('traceback', '')}")
        assert json.loads(json.dumps(outcome.result)) == outcome.result, "_run must return something JSON-able"
        if dry_run.server is not None:
            assert not dry_run.server.unmatched, f"requests with no recorded response: {dry_run.server.unmatched}"

    def test_dry_run_result_and_datasets(self, dry_run: DryRun) -> None:
        outcome = dry_run.outcome
        if not outcome.ok:
            pytest.skip("the dry run failed (see test_dry_run_finishes)")
        if self.expected_result is not None:
            assert outcome.result == self.expected_result
        for name, rows in outcome.datasets.items():
            assert all(isinstance(row, dict) for row in rows), f"dataset {name}: every row must be an object"
        counts = {name: len(rows) for name, rows in outcome.datasets.items()}
        for name, expected in self.expected_rows.items():
            assert counts.get(name) == expected, f"dataset {name}: {counts.get(name)} rows, expected {expected}"
        self.verify(dry_run)

    def test_secrets_stay_sealed_and_masked(self, dry_run: DryRun) -> None:
        secrets = [v for v in secret_values(split_secrets(dry_run.spec)[1]) if v != "***"]
        if not secrets:
            pytest.skip("sample_settings give no secret setting")
        shown = json.dumps(dry_run.outcome.record, default=str)
        contents = dry_run.redis_contents()
        for secret in secrets:
            assert secret.encode() not in contents, "a secret is in Redis in plain text"
            assert secret not in shown, "a secret is in the job's record as the API shows it"
            assert secret not in dry_run.log_text, "a secret is in the log"

    def test_check(
        self, platform: PlatformSpec, kit_registry: Registry, recorded: RecordedResponses | None,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        if getattr(platform.cls, "_check", None) is None or self.check_ok is None:
            pytest.skip("the platform has no _check" if self.check_ok is not None else "check_ok is None")
        self.replay(monkeypatch)
        answer = check_spec_locally(check_spec(self.body(recorded), kit_registry))
        assert answer["ok"] is self.check_ok, answer["message"]
