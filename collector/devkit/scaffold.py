"""`collector new-platform NAME`: a platform file (its test file, its example spec) from a template that passes the
kit's tests."""

from __future__ import annotations

import importlib.util
import keyword
import re
import string
from importlib import resources
from pathlib import Path

from collector.errors import ScaffoldError
from collector.specs.registry import Registry

PLATFORM_ID = re.compile(r"^[a-z][a-z0-9_]*$")


def class_name(platform_id: str) -> str:
    """`acme_ads` → `AcmeAds`: the names line up."""
    return "".join(part.capitalize() for part in platform_id.split("_") if part)


def package_dir(package: str) -> Path:
    """Where the files of the platforms package are."""
    try:
        found = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        found = None
    if found is None or not found.submodule_search_locations:
        raise ScaffoldError(f"the platforms package {package!r} cannot be found; give the folder with --dir")
    return Path(next(iter(found.submodule_search_locations)))


def check_name(name: str, *, where: Path, registry: Registry | None) -> None:
    """A platform id: a lowercase Python identifier that is not a keyword nor an existing platform."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ScaffoldError(
            f"{name!r} is not a Python identifier; a platform id is a module name: letters, digits and '_', "
            "not starting with a digit, not a keyword (e.g. acme_ads)"
        )
    if not PLATFORM_ID.fullmatch(name):
        suggestion = re.sub(r"(?<!^)(?=[A-Z])", "_", name.strip("_")).lower() or "acme_ads"
        raise ScaffoldError(
            f"{name!r}: a platform id is lowercase and does not start with '_' (files starting with '_' are "
            f"not platforms); use e.g. {suggestion!r}"
        )
    if (where / f"{name}.py").exists() or (registry is not None and name in {**registry.platforms, **registry.broken}):
        raise ScaffoldError(f"platform {name!r} already exists ({where / (name + '.py')}); choose another name")


def render(template: str, **values: str) -> str:
    text = resources.files("collector").joinpath("templates", template).read_text(encoding="utf-8")
    return string.Template(text).substitute(values)


def new_platform(name: str, *, package: str, where: Path | None = None, tests: Path | None = None,
                 examples: Path | None = None) -> list[Path]:
    """Write `<where>/<name>.py`; when a tests folder is known, `<tests>/test_<name>.py`; when an examples folder
    is (`examples/` beside the platforms folder, where every platform's spec is), `<examples>/<name>.json`, a job
    spec that runs as it is. Returns what it wrote."""
    where = where or package_dir(package)
    if not where.is_dir():
        raise ScaffoldError(f"{where} is not a folder; give the platforms folder with --dir")
    registry = Registry.discover(package) if where == _safe_package_dir(package) else None
    check_name(name, where=where, registry=registry)
    if tests is None and (where.parent / "tests").is_dir():
        tests = where.parent / "tests" / "platforms"
    test_file = tests / f"test_{name}.py" if tests is not None else None
    if test_file is not None and test_file.exists():
        raise ScaffoldError(f"{test_file} already exists; remove it or give another folder with --tests-dir")
    if examples is None and (where.parent / "examples").is_dir():
        examples = where.parent / "examples"
    example = examples / f"{name}.json" if examples is not None else None
    if example is not None and example.exists():
        raise ScaffoldError(f"{example} already exists; remove it or give another folder with --examples-dir")
    values = {"platform_id": name, "class_name": class_name(name), "package": package,
              "test_file": _shown(test_file, where.parent),
              "example_file": _shown(example, where.parent) if example is not None else "spec.json"}
    written = [where / f"{name}.py"]
    written[0].write_text(render("platform.py.tmpl", **values), encoding="utf-8")
    if test_file is not None:
        test_file.parent.mkdir(parents=True, exist_ok=True)
        test_file.write_text(render("test_platform.py.tmpl", **values), encoding="utf-8")
        written.append(test_file)
    if example is not None:
        example.parent.mkdir(parents=True, exist_ok=True)
        example.write_text(render("example.json.tmpl", **values), encoding="utf-8")
        written.append(example)
    return written


def _shown(path: Path | None, root: Path) -> str:
    if path is None:
        return "none yet; see the README"
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


def _safe_package_dir(package: str) -> Path | None:
    try:
        return package_dir(package)
    except ScaffoldError:
        return None
