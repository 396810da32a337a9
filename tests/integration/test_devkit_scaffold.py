"""`collector new-platform`: the generated platform is discovered, runs, passes its generated tests and lint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_devkit_run import collector


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the platforms package, importable as `myplatforms`, beside an empty tests folder."""
    shutil.copytree(ROOT / "platforms", tmp_path / "myplatforms", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tests").mkdir()
    return tmp_path


def in_project(project: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return collector(*args, stdin=stdin, COLLECTOR_PLATFORMS_PACKAGE="myplatforms", PYTHONPATH=str(project))


def run_pytest(project: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["PYTHONPATH"] = f"{project}{os.pathsep}{ROOT}"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "tests"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_generated_platform_is_discovered_runs_and_passes_its_tests(project: Path) -> None:
    done = in_project(project, "new-platform", "acme_ads")
    assert done.returncode == 0, done.stderr
    platform_file = project / "myplatforms" / "acme_ads.py"
    test_file = project / "tests" / "platforms" / "test_acme_ads.py"
    assert done.stdout.split() == ["wrote", str(platform_file), "wrote", str(test_file)]
    source = platform_file.read_text()
    assert "class AcmeAds(Platform):" in source and "def _check(self)" in source and "TODO" in source
    assert 'package = "myplatforms"' in test_file.read_text()

    ran = in_project(project, "run", "-", "--set", "start_date=2024-01-01", "--set", "end_date=2024-01-02",
                     stdin='{"platform_id": "acme_ads"}')
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"days": 2, "rows": 6}
    checked = in_project(project, "check", "-", stdin='{"platform_id": "acme_ads"}')
    assert checked.returncode == 0 and json.loads(checked.stdout)["ok"] is True

    tests = run_pytest(project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "passed" in tests.stdout and "failed" not in tests.stdout
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), str(platform_file),
         str(test_file)], capture_output=True, text=True, timeout=60,
    )
    assert lint.returncode == 0, lint.stdout


def test_the_kit_fails_a_platform_that_leaks_its_secret(project: Path) -> None:
    assert in_project(project, "new-platform", "leaky").returncode == 0
    platform_file = project / "myplatforms" / "leaky.py"
    source = platform_file.read_text()
    # A secret in a dataset row is masked by the service: the kit passes, the row shows "***".
    row = '"amount": float(row["amount"])}'
    assert row in source
    source = source.replace(row, '"amount": float(row["amount"]), "key": str(self.api_key)}')
    platform_file.write_text(source)
    tests = run_pytest(project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    out = project / "out"
    ran = in_project(project, "run", "-", "--set", "api_key=example-key", "--set", "start_date=2024-01-01",
                     "--set", "end_date=2024-01-01", "--out", str(out), stdin='{"platform_id": "leaky"}')
    assert ran.returncode == 0, ran.stderr
    assert json.loads((out / "processed.jsonl").read_text().splitlines()[0])["key"] == "***"
    # Handed to a sub-job as a setting that is not secret there, it is the sub-job's data: the kit finds it.
    start = "original: list[dict[str, Any]] = []"
    assert start in source
    platform_file.write_text(source.replace(start, start + '\n        ctx.spawn("http_json", {"url": '
                                            'f"https://api.example.com/v1?key={self.api_key}"})'))
    tests = run_pytest(project)
    assert tests.returncode == 1
    assert "1 failed" in tests.stdout and "a secret is in Redis in plain text" in tests.stdout


@pytest.mark.parametrize(("name", "says"), [
    ("AcmeAds", "use e.g. 'acme_ads'"),
    ("1st_source", "is not a Python identifier"),
    ("class", "is not a Python identifier"),
    ("acme-ads", "is not a Python identifier"),
    ("_private", "does not start with '_'"),
    ("demo", "platform 'demo' already exists"),
])
def test_a_bad_or_taken_name_is_refused_and_nothing_is_written(project: Path, name: str, says: str) -> None:
    before = sorted(p.name for p in (project / "myplatforms").iterdir())
    done = in_project(project, "new-platform", name)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert sorted(p.name for p in (project / "myplatforms").iterdir()) == before
    assert not (project / "tests" / "platforms").exists()


def test_after_the_scaffold_in_a_copy_of_the_project_the_suite_stays_green(tmp_path: Path) -> None:
    """`collector new-platform` in a copy of this project, as a developer runs it in theirs; then the tests that
    check every platform (its example spec, its contract) and the new test file pass at once."""
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", ".venv", ".git", "*.egg-info", ".pytest_cache", ".ruff_cache")
    for part in ("platforms", "examples", "tests", "storage"):
        shutil.copytree(ROOT / part, copy / part, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["PYTHONPATH"] = str(copy)
    done = subprocess.run([sys.executable, "-m", "collector", "new-platform", "acme_ads"], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    example = copy / "examples" / "acme_ads.json"
    assert f"wrote {example}" in done.stdout.splitlines()
    assert json.loads(example.read_text())["platform_id"] == "acme_ads"
    assert (copy / "platforms" / "acme_ads.py").is_file()

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_examples.py",
         "tests/test_contract.py", "tests/platforms/test_acme_ads.py"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "acme_ads" in subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
         "tests/test_examples.py"], cwd=copy, env=env, capture_output=True, text=True, timeout=120).stdout
    ran = subprocess.run([sys.executable, "-m", "collector", "run", "examples/acme_ads.json"], cwd=copy, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and json.loads(ran.stdout)["days"] == 3, ran.stderr


def test_without_a_tests_folder_it_says_no_test_was_written(project: Path) -> None:
    shutil.rmtree(project / "tests")
    done = in_project(project, "new-platform", "acme_ads")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["wrote", str(project / "myplatforms" / "acme_ads.py")]
    assert "no test file was written" in done.stderr and "--tests-dir" in done.stderr
