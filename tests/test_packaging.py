"""The pinned requirements the image installs agree with pyproject.toml; the entry point knows its roles."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

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
    assert "HEALTHCHECK" in dockerfile and "/system/alive" in dockerfile and "\nUSER 10001" in dockerfile


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
