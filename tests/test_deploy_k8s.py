"""deploy/k8s: the kustomizations render and validate offline, and what they say agrees with collector itself:
the probes' routes, the shutdown grace, the queue KEDA counts, the NetworkPolicies, and a SIGTERMed pool taking no
new job (why the worker needs no preStop hook)."""

from __future__ import annotations

import copy
import importlib.util
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from collector.api.auth import OPEN_ENDPOINTS
from collector.api.tokens import digest, read_tokens_file
from collector.app import create_app
from collector.config import Config
from collector.errors import ConfigError
from collector.sealing import check_key
from collector.store.rq import RQ
from tests.conftest import ROOT, PoolProcess, ServedApp, wait_for

_spec = importlib.util.spec_from_file_location("deploy_k8s_validate", ROOT / "deploy" / "k8s" / "validate.py")
assert _spec is not None and _spec.loader is not None
validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate)

EXAMPLE = ROOT / "deploy" / "k8s" / "overlays" / "example"
SENTINEL = ROOT / "deploy" / "k8s" / "overlays" / "sentinel"
SECRET_KEY = "deploy-test-key-that-is-32-bytes-long"


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    return validate.render(EXAMPLE)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def settings(docs: list[dict[str, Any]]) -> Config:
    """The Config the pods get from the ConfigMap (secrets given as tests would)."""
    env = dict(one(docs, "ConfigMap", "collector-config")["data"])
    env.pop("COLLECTOR_API_TOKENS_FILE")
    return Config.from_env({**env, "COLLECTOR_SECRET_KEY": SECRET_KEY, "COLLECTOR_REDIS_URL": "redis://redis:6379/0"})


def test_every_kustomization_renders_and_validates() -> None:
    directories = validate.kustomizations()
    assert {d.name for d in directories} >= {"base", "example"}
    for directory in directories:
        docs = validate.render(directory)
        assert docs, directory
        assert [p for doc in docs for p in validate.problems(doc)] == [], directory
    assert validate.main([]) == 0


def test_the_base_is_namespace_agnostic_and_the_overlay_sets_one(example: list[dict[str, Any]]) -> None:
    base = validate.render(ROOT / "deploy" / "k8s" / "base")
    assert all("namespace" not in d["metadata"] for d in base)
    namespaced = [d for d in example if d["kind"] != "Namespace"]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"collector-example"}


def test_validation_refuses_unknown_fields_and_wrong_types(example: list[dict[str, Any]]) -> None:
    scaled = copy.deepcopy(one(example, "ScaledObject", "collector-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 2
    scaled["spec"]["pollingInterval"] = 0
    found = validate.problems(scaled)
    assert any("listLength" in p and "string" in p for p in found), found
    assert any("pollingInterval" in p for p in found), found
    deployment = copy.deepcopy(one(example, "Deployment", "collector-api"))
    container(deployment)["livenessprobe"] = container(deployment).pop("livenessProbe")
    assert any("livenessprobe" in p for p in validate.problems(deployment))
    assert validate.problems({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "x"}})


def test_validation_refuses_a_scaled_object_that_misses_a_lane(example: list[dict[str, Any]]) -> None:
    assert validate.lane_problems(example) == []
    docs = copy.deepcopy(example)
    scaled = one(docs, "ScaledObject", "collector-worker")
    scaled["spec"]["triggers"] = [t for t in scaled["spec"]["triggers"] if t["name"] != "queued_low"]
    scaled["spec"]["triggers"][0]["metadata"]["listName"] = "rq:queue:other"
    scaled["spec"]["advanced"]["scalingModifiers"]["formula"] = "queued + started"
    found = validate.lane_problems(docs)
    assert any("rq:queue:collector:low" in p for p in found), found
    assert any("rq:queue:collector:high" in p for p in found) and any("rq:queue:other" in p for p in found), found
    assert any("leaves out the trigger queued_high" in p for p in found), found


def test_the_probes_ask_open_routes_of_the_app_that_answer(example: list[dict[str, Any]], data_dir: Path) -> None:
    api = container(one(example, "Deployment", "collector-api"))
    assert api["args"] == ["serve"]
    paths = {"liveness": api["livenessProbe"]["httpGet"]["path"], "readiness": api["readinessProbe"]["httpGet"]["path"]}
    assert paths == {"liveness": "/system/alive", "readiness": "/system/ready"}
    app = create_app(Config(secret_key=SECRET_KEY, data_dir=str(data_dir)), connection=fakeredis.FakeRedis(),
                     dashboard=False)
    adapter = app.url_map.bind("localhost")
    client = app.test_client()
    for path in paths.values():
        endpoint, _ = adapter.match(path, method="GET")
        assert endpoint in OPEN_ENDPOINTS, f"{path} needs no token"
        assert client.get(path).status_code == 200, path


def test_the_worker_grace_period_covers_the_shutdown_grace(example: list[dict[str, Any]]) -> None:
    worker = one(example, "Deployment", "collector-worker")
    grace = settings(example).shutdown_grace_s
    assert grace > 0
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= grace + 10
    assert container(worker)["args"][0] == "worker"


def test_the_scaled_object_counts_collectors_queue_and_started_jobs(
    example: list[dict[str, Any]], data_dir: Path
) -> None:
    config = settings(example)
    scaled = one(example, "ScaledObject", "collector-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "collector-worker"
    triggers = {t["name"]: t for t in scaled["triggers"]}
    connection = fakeredis.FakeRedis()
    lanes = {name: triggers[name]["metadata"]["listName"] for name in ("queued_high", "queued", "queued_low")}
    assert all(triggers[name]["type"] == "redis" for name in lanes)
    assert list(lanes.values()) == RQ(connection, config).lane_keys == [
        "rq:queue:collector:high", "rq:queue:collector", "rq:queue:collector:low"]
    started = triggers["started"]["metadata"]
    assert triggers["started"]["type"] == "metrics-api" and started["format"] == "prometheus"
    # The metric the trigger reads is what the API's /metrics serves for this queue (RQ's started registry).
    connection.zadd(RQ(connection, config).queue.started_job_registry.key, {"some-job:execution": 9e9})
    app = create_app(Config(secret_key=SECRET_KEY, data_dir=str(data_dir), queue_name=config.queue_name),
                     connection=connection, dashboard=False)
    text = app.test_client().get(started["url"].split(":8000", 1)[1]).get_data(as_text=True)
    assert f'{started["valueLocation"]} 1.0' in text.splitlines()
    # KEDA reaches both through the overlay's fully qualified names, never the base's placeholders.
    assert all("collector-example.svc" in triggers[name]["metadata"]["address"] for name in lanes)
    assert "collector-example.svc" in started["url"]
    modifiers = scaled["advanced"]["scalingModifiers"]
    assert modifiers["formula"] == "queued_high + queued + queued_low + started"
    children = container(one(example, "Deployment", "collector-worker"))["args"]
    assert modifiers["target"] == children[children.index("-n") + 1], "the target per pod is its pool's size"


def test_network_policies_fence_api_workers_and_redis(example: list[dict[str, Any]]) -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in example if d["kind"] == "NetworkPolicy"}
    assert {"collector-api", "collector-worker", "collector-redis", "collector-worker-connections"} <= set(policies)
    worker = policies["collector-worker"]
    assert set(worker["policyTypes"]) == {"Ingress", "Egress"} and worker["ingress"] == []
    peers = [peer for rule in worker["egress"] for peer in rule["to"]]
    assert {peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for peer in peers} == {"redis", None}
    assert all(peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"} for peer in peers
               if "app.kubernetes.io/component" not in peer["podSelector"]["matchLabels"])
    connections = policies["collector-worker-connections"]
    assert [peer["ipBlock"]["cidr"] for rule in connections["egress"] for peer in rule["to"]] == ["192.0.2.0/24"]
    redis_policy = policies["collector-redis"]
    assert redis_policy["egress"] == []
    sources = [peer["podSelector"]["matchLabels"] for rule in redis_policy["ingress"] for peer in rule["from"]]
    assert {s.get("app.kubernetes.io/component", s.get("app")) for s in sources} == {"api", "worker", "keda-operator"}
    redis_pods = one(example, "StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    assert redis_policy["podSelector"]["matchLabels"].items() <= redis_pods.items()


def test_the_sentinel_overlay_points_every_process_and_keda_at_the_same_sentinels() -> None:
    docs = validate.render(SENTINEL)
    config = settings(docs)
    assert config.sentinels and config.redis_master and config.redis_min_replicas == 1
    scaled = one(docs, "ScaledObject", "collector-worker")["spec"]
    lanes = [t for t in scaled["triggers"] if t["name"] != "started"]
    assert [t["metadata"]["listName"] for t in lanes] == RQ(fakeredis.FakeRedis(), config).lane_keys
    for trigger in lanes:  # KEDA asks the same sentinels (by fully qualified name) for the same master
        assert trigger["type"] == "redis-sentinel" and trigger["metadata"]["sentinelMaster"] == config.redis_master
        pairs = [address.rsplit(":", 1) for address in trigger["metadata"]["addresses"].split(",")]
        assert [(host.removesuffix(".collector-sentinel.svc.cluster.local"), int(port)) for host, port in pairs] \
            == config.sentinels
    assert "collector-sentinel.svc" in next(t for t in scaled["triggers"] if t["name"] == "started")["metadata"]["url"]
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    sentinel_ports = {port for _, port in config.sentinels}
    for name in ("collector-api", "collector-worker"):  # the sentinels, then the primary they name
        to_redis = [rule for rule in policies[name]["egress"]
                    if any(p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "redis"
                           for p in rule["to"])]
        assert {p["port"] for rule in to_redis for p in rule["ports"]} == {6379, *sentinel_ports}, name
    redis_ports = {p["port"] for rule in policies["collector-redis"]["ingress"] for p in rule["ports"]}
    assert redis_ports == {6379, *sentinel_ports}


def test_the_example_secrets_are_placeholders_no_process_accepts(example: list[dict[str, Any]]) -> None:
    secret = one(example, "Secret", "collector-secrets")
    assert set(secret["data"]) == {"COLLECTOR_SECRET_KEY", "REDIS_PASSWORD", "METRICS_TOKEN", "tokens"}
    env = dict(line.split("=", 1) for line in (EXAMPLE / "secrets.example.env").read_text().splitlines()
               if line and not line.startswith("#"))
    with pytest.raises(ConfigError):
        check_key(env["COLLECTOR_SECRET_KEY"])
    tokens = read_tokens_file(str(EXAMPLE / "tokens.example"))
    assert {t.name for t in tokens} == {"keda", "admin"}
    keda = next(t for t in tokens if t.name == "keda")
    assert keda.scopes == {"read"}, "KEDA's token only reads /metrics"
    assert keda.digest == digest(env["METRICS_TOKEN"]), "METRICS_TOKEN is the keda line's token"


def test_a_sigtermed_pool_takes_no_new_job(
    served: ServedApp, start_pool: Callable[..., PoolProcess], redis_client: redis.Redis
) -> None:
    """The kubelet's SIGTERM reaches the pool's supervisor (PID 1 in the image): from then on no child takes a job,
    the idle one included, while the running one finishes. So the worker Deployment needs no preStop hook."""
    pool = start_pool(2)
    status, body = served.request("POST", "/execution/run",
                                  {"platform_id": "demo", "settings": {"rows": 150, "delay_s": 0.02}})
    assert status == 202, body
    running = body["job_id"]
    wait_for(lambda: served.request("GET", f"/execution/get?job_id={running}")[1]["status"] == "started",
             timeout_s=30, what="the first job to start")
    pool.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in pool.output(), timeout_s=30, what="the pool to take the SIGTERM")
    status, body = served.request("POST", "/execution/run", {"platform_id": "demo", "settings": {"rows": 1}})
    assert status == 202, body
    late = body["job_id"]
    assert pool.process.wait(60) == 0
    assert served.request("GET", f"/execution/get?job_id={running}")[1]["status"] == "finished"
    assert served.request("GET", f"/execution/get?job_id={late}")[1]["status"] == "queued"
    assert late.encode() in redis_client.lrange("rq:queue:collector", 0, -1), "the late job still waits"
    assert pool.worker_names() == []
