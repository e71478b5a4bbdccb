"""The Kubernetes manifests (deploy/k8s), validated offline: schemas, the webhook's checks, one place.

No cluster here: each overlay is rendered with ``kubectl kustomize`` and checked by
:mod:`scripts.check_manifests` (Kubernetes' schemas with ``--strict``, KServe's CRD schema and the
checks its webhook makes). The checker is shown to fail on the faults it exists for, and the values
that also live elsewhere (ports, health paths, Triton's flags, the S3 repository, the GPU kind) are
checked against their one source.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from common.stores import S3Url
from scripts import check_manifests
from scripts.check_manifests import OVERLAYS, problems, render
from serving.fleet.replicas import _parse
from serving.server.environment import ServerConfig
from tests.prerequisites import ROOT, need

OVERLAY_NAMES = ("cpu", "gpu", "kserve")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    need("kustomize")
    need("kserve")
    return {name: render(OVERLAYS / name) for name in OVERLAY_NAMES}


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_every_overlay_renders_and_every_resource_is_valid(rendered):
    for name, docs in rendered.items():
        assert docs and problems(docs) == [], name
    kinds = {d["kind"] for d in rendered["cpu"]}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "ConfigMap",
    } <= kinds
    assert "InferenceService" in {d["kind"] for d in rendered["kserve"]}


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (lambda s: s["predictor"].__setitem__("canaryTrafficPercent", 150), "0-100"),
        (lambda s: s["predictor"].__setitem__("canaryTrafficPercent", "50"), "is not of type"),
        (lambda s: s["predictor"].__setitem__("minReplicas", -1), ">= 0"),
        (lambda s: s["predictor"].__setitem__("minReplicas", 9), "minReplicas 9 > maxReplicas 8"),
        (lambda s: s["predictor"]["model"].__setitem__("storageURI", "s3://x/y"), "unknown field"),
        (lambda s: s.pop("predictor"), "predictor"),
        (lambda s: s["predictor"].__setitem__("triton", {"storageUri": "s3://a/b"}), "exactly one"),
    ],
)
def test_the_inference_service_checks_catch_what_the_webhook_would(rendered, fault, says):
    service = copy.deepcopy(one(rendered["kserve"], "InferenceService", "cifar10"))
    fault(service["spec"])
    found = problems([service])
    assert found and any(says in line for line in found), found


def test_core_kinds_are_strict_an_unknown_or_mistyped_field_fails(rendered):
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment", "triton"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    assert any("paht" in line for line in problems([deployment]))
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment", "triton"))
    deployment["spec"]["replicas"] = "two"
    assert problems([deployment])


def test_ports_health_paths_and_flags_agree_with_the_server_and_compose(rendered):
    defaults = ServerConfig(model_repository=Path("r"))
    ports = {"http": defaults.http_port, "grpc": defaults.grpc_port, "metrics": defaults.metrics_port}
    for overlay in ("cpu", "gpu"):
        docs = rendered[overlay]
        container = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == ports
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        for service in ("triton", "triton-replicas"):
            for port in one(docs, "Service", service)["spec"]["ports"]:
                assert port["port"] == ports[port["name"]] and port["targetPort"] == port["name"]
        compose = yaml_load(ROOT / "compose.yaml")["services"]["triton"]["command"]
        assert _flags(container["args"]) == _flags(compose)  # the same server, however it is run
    service = one(rendered["kserve"], "InferenceService", "cifar10")["spec"]["predictor"]["model"]
    triton = _flags(
        one(rendered["cpu"], "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert _flags(service["args"]) <= triton  # KServe adds the repository itself; no admin API there
    assert service["ports"][0]["containerPort"] == ports["grpc"]


def test_settings_are_the_variables_the_commands_read_and_name_one_repository(rendered, monkeypatch):
    from common.params import load_params

    settings = one(rendered["cpu"], "ConfigMap", _settings_name(rendered["cpu"]))["data"]
    for key, value in settings.items():  # the same precedence as on a laptop: variable over params.yaml
        monkeypatch.setenv(key, value)
    params = load_params(ROOT / "params.yaml")
    assert (
        params.serving.kind == "KIND_CPU"
        and params.release.prometheus_url == settings["CIFAR10_RELEASE__PROMETHEUS_URL"]
    )
    host, grpc_port, http_port = _parse(params.fleet.service)
    assert (int(grpc_port), int(http_port)) == (8001, 8000) and host.startswith("triton-replicas.")
    gpu = one(rendered["gpu"], "ConfigMap", _settings_name(rendered["gpu"]))["data"]
    assert gpu["CIFAR10_SERVING__KIND"] == "KIND_GPU"
    container = one(rendered["gpu"], "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    triton_form = S3Url.parse(settings["CIFAR10_MODEL_REPOSITORY"])
    kserve = one(rendered["kserve"], "InferenceService", "cifar10")["spec"]["predictor"]["model"][
        "storageUri"
    ]
    bucket, _, prefix = kserve.removeprefix("s3://").partition("/")
    assert (bucket, prefix) == (triton_form.bucket, triton_form.prefix)  # one place, two spellings


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _flags(args: list[str]) -> set[str]:
    """Triton's flags, without the ones whose values differ by design (repository, admin token)."""
    skip = ("--model-repository", "--http-restricted-api", "--grpc-restricted-protocol")
    return {a.replace("$$", "$") for a in args if a.startswith("--") and not a.startswith(skip)}


def _settings_name(docs: list[dict]) -> str:
    """The generated ConfigMap's name (Kustomize appends a content hash)."""
    (name,) = [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ConfigMap" and "settings" in d["metadata"]["name"]
    ]
    return name


def test_the_checker_runs_as_a_command(rendered, capsys):
    assert shutil.which("kubectl")
    assert check_manifests.main([str(OVERLAYS / "kserve")]) == 0
    assert "kserve: 8 resources, OK" in capsys.readouterr().out
