"""compose.yaml cannot be started here (no Docker engine): parse it and check it against the code."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _container_port(mapping: str) -> int:
    return int(str(mapping).split(":")[-1])


def test_services_and_pinned_images(compose):
    services = compose["services"]
    assert set(services) == {"triton", "mlflow", "prometheus", "grafana", "postgres", "minio", "buckets"}
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name} image not pinned: {image}"
    mlflow_base = (ROOT / "docker" / services["mlflow"]["build"]["dockerfile"]).read_text()
    import mlflow

    assert f"ghcr.io/mlflow/mlflow:v{mlflow.__version__}" in mlflow_base, "same MLflow as the project"
    assert f"mlflow[auth]=={mlflow.__version__}" in mlflow_base
    import boto3
    import psycopg

    assert f"psycopg[binary]=={psycopg.__version__}" in mlflow_base, "the driver SQLAlchemy picks"
    assert f"boto3=={boto3.__version__}" in mlflow_base, "the artifact proxy's S3 client, as tested"


def test_every_port_is_published_on_the_bind_address_only(compose):
    for name, svc in compose["services"].items():
        for mapping in svc.get("ports", []):
            assert str(mapping).startswith("${CIFAR10_BIND:-127.0.0.1}:"), f"{name} publishes {mapping}"


def test_the_control_plane_needs_credentials(compose):
    mlflow = compose["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_FLASK_SERVER_SECRET_KEY:?")
    auth_ini = next(v for v in mlflow["volumes"] if "basic_auth.ini" in v).split(":")[0]
    text = (ROOT / auth_ini).read_text()
    assert "admin_password" not in text.replace("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    prometheus = " ".join(compose["services"]["prometheus"]["command"])
    assert "--web.enable-lifecycle" not in prometheus and "--web.enable-admin-api" not in prometheus
    for service, key in [("postgres", "POSTGRES_PASSWORD"), ("minio", "MINIO_ROOT_PASSWORD"),
                         ("mlflow", "PGPASSWORD"), ("mlflow", "AWS_SECRET_ACCESS_KEY")]:  # fmt: skip
        value = compose["services"][service]["environment"][key]
        assert value.startswith("${") and ":?" in value, f"{service} {key} must be required, not defaulted"
    from common.stores import redact

    text = (ROOT / "compose.yaml").read_text()
    assert redact(text) == text, "a password written into a URI"
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    header = (ROOT / "compose.yaml").read_text().split("\nname:")[0]
    assert (
        "serving.server.cli sync" not in header and "cifar10 registry sync" in header
    )  # was cifar10-registry


def test_triton_image_matches_the_embedded_server(compose):
    dockerfile = ROOT / "docker" / compose["services"]["triton"]["build"]["dockerfile"]
    base = re.search(r"^FROM nvcr.io/nvidia/tritonserver:(\d\d)\.(\d\d)-py3", dockerfile.read_text(), re.M)
    assert base, "the Triton image must build on NGC tritonserver"
    # NGC release YY.MM ships Triton 2.(MM + 41) for 2024 releases: 24.10 -> 2.51, the embedded version.
    assert (int(base.group(1)), int(base.group(2))) == (24, 10)
    assert "pillow" in dockerfile.read_text().lower(), "the preprocess model imports PIL"


def test_triton_ports_gpu_and_restricted_api_agree_with_the_code(compose):
    from serving.server.embedded import ADMIN_HEADER, ServerConfig

    triton = compose["services"]["triton"]
    defaults = ServerConfig(model_repository=Path("model_repository"))
    assert sorted(_container_port(p) for p in triton["ports"]) == sorted(
        [defaults.http_port, defaults.grpc_port, defaults.metrics_port]
    )
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    command = " ".join(triton["command"])
    assert "--model-control-mode=explicit" in command and "summary_latencies=true" in command
    assert f"model-repository:{ADMIN_HEADER}=" in command


def compose_repository(compose) -> tuple[str, str]:
    """(host folder Triton mounts, repository path inside the container)."""
    triton = compose["services"]["triton"]
    (mount,) = triton["volumes"]
    source, target, *_ = mount.split(":")
    repository = next(a.split("=", 1)[1] for a in triton["command"] if a.startswith("--model-repository="))
    return source, repository.removeprefix(target.rstrip("/") + "/")


def test_triton_mounts_the_folder_holding_the_repository(compose):
    """A bind mount of the repository itself would pin the tree that sync swaps out."""
    source, inside = compose_repository(compose)
    assert "/" not in inside, "the repository must be a direct child of the mounted folder"
    header = (ROOT / "compose.yaml").read_text().split("\nname:")[0]
    assert f"--repository {source.removeprefix('./')}/{inside}" in header  # the documented sync


def test_every_mounted_file_exists(compose):
    generated = {compose_repository(compose)[0]}  # written by sync
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source not in generated:
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_triton_metrics_port_and_grafana_reads_prometheus(compose):
    prom_cfg = yaml.safe_load((ROOT / "monitoring" / "prometheus.compose.yml").read_text())
    targets = [t for job in prom_cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "triton:8002" in targets
    prom_port = _container_port(compose["services"]["prometheus"]["ports"][0])
    ds = yaml.safe_load((ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == f"http://prometheus:{prom_port}"


def test_the_gpu_configs_name_the_repository_where_the_container_sees_it_writable(compose):
    """ORT writes TensorRT engines to serving.gpu.served_repository/<model>/trt_cache in the container."""
    from common.params import load_params

    triton = compose["services"]["triton"]
    repository = next(a.split("=", 1)[1] for a in triton["command"] if a.startswith("--model-repository="))
    assert load_params(ROOT / "params.yaml").serving.gpu.served_repository == repository
    (mount,) = [m for m in triton["volumes"] if repository.startswith(m.split(":")[1])]
    assert not mount.endswith(":ro"), "the engine cache is written inside the repository"


def test_mlflow_keeps_its_store_in_postgres_and_its_artifacts_in_the_stack_s_bucket(compose):
    """The team's stores: the database compose starts, the bucket its one-shot service creates."""
    mlflow = compose["services"]["mlflow"]
    args = dict(a.split("=", 1) for a in mlflow["command"] if a.startswith("--") and "=" in a)
    postgres = compose["services"]["postgres"]["environment"]
    assert (
        args["--backend-store-uri"]
        == f"postgresql://{postgres['POSTGRES_USER']}@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert "--serve-artifacts" in mlflow["command"]
    bucket = args["--artifacts-destination"].removeprefix("s3://").split("/")[0]
    assert f"s3/{bucket}" in compose["services"]["buckets"]["command"][0]
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["depends_on"]["buckets"]["condition"] == "service_completed_successfully"
    init = next(v for v in compose["services"]["postgres"]["volumes"] if v.endswith(".sql:ro"))
    assert "CREATE DATABASE optuna" in (ROOT / init.split(":")[0]).read_text()
