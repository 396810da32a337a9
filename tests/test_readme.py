"""README truths: the Configuration table names every variable the code reads, once; its examples are the code."""

from __future__ import annotations

import dataclasses
import re
import socket
from pathlib import Path

import pytest

from collector.config import PREFIX, Config
from collector.errors import TransientError
from collector.store.index import STATUSES
from tests.devkit_platforms.rates import Rates

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CODE_DIRS = ("collector", "platforms", "storage")


def configuration_rows() -> list[str]:
    """The variable of each row of README's Configuration table, in order (duplicates kept)."""
    section = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(COLLECTOR_[A-Z0-9_]+)` \|", section, flags=re.MULTILINE)


def variables_read() -> set[str]:
    """Every COLLECTOR_* variable the code reads: a field of Config each, and any name the code spells out."""
    names = {PREFIX + f.name.upper() for f in dataclasses.fields(Config) if f.name != "environ"}
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            names.update(re.findall(r"\bCOLLECTOR_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return names


def test_the_environment_is_read_only_through_config() -> None:
    readers = []
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if re.search(r"os\.getenv|os\.environ\.get|os\.environ\[", text):
                readers.append(str(path.relative_to(ROOT)))
    assert readers == [], f"read COLLECTOR_* variables through collector.config.Config, not in {readers}"


def test_every_variable_the_code_reads_is_documented_exactly_once() -> None:
    rows = configuration_rows()
    twice = sorted({n for n in rows if rows.count(n) > 1})
    assert twice == [], f"README's Configuration table lists {twice} more than once; merge the rows"
    missing = sorted(variables_read() - set(rows))
    assert missing == [], f"add a row to README's Configuration table for each of {missing}"
    unknown = sorted(set(rows) - variables_read())
    assert unknown == [], f"README's Configuration table lists {unknown}, which the code never reads"


def test_the_rates_example_is_the_file_the_kit_tests_run() -> None:
    code = (ROOT / "tests" / "devkit_platforms" / "rates.py").read_text()
    body = code.split("\nclass Rates(Platform):", 1)[1]
    block = README.split("class Rates(Platform):", 1)[1].split("```", 1)[0]
    strip = re.compile(r"\s+#.*$", flags=re.MULTILINE)
    assert strip.sub("", block).strip() == strip.sub("", body).strip()


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:{port}", "http://no-such-host.invalid"])
def test_the_rates_example_retries_a_source_it_cannot_reach(base_url: str) -> None:
    with socket.socket() as probe:          # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rates = Rates(base_url=base_url.format(port=port), api_key="k")
    with pytest.raises(TransientError, match="could not be reached"):
        rates._check()


def test_the_tools_of_the_kit_are_counted_right() -> None:
    section = README.split("### The platform author's kit", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^\*\*(\d+)\. ", section, flags=re.MULTILINE)
    words = {"Five": 5, "Six": 6, "Seven": 7}
    said = re.search(r"^(\w+) tools take a platform", section, flags=re.MULTILINE)
    assert said is not None and steps == [str(n) for n in range(1, len(steps) + 1)]
    assert words[said.group(1)] == len(steps)


def test_the_record_statuses_named_are_those_the_list_accepts() -> None:
    section = README.split("### The job record", 1)[1].split("\n### ", 1)[0]
    missing = [s for s in STATUSES if f"`{s}`" not in section]
    assert missing == [], f"README's job record section does not name the statuses {missing}"
