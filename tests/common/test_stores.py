"""Store URIs: their precedence, their checks, and that no password is ever shown."""

from __future__ import annotations

import pytest

from common import stores
from common.params import ParamsError, StoresConfig, resolve
from common.stores import S3Url, StoreError


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:pw@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("error at https://a:b@h/x and sqlite:///f", "error at https://a:***@h/x and sqlite:///f"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
        ("postgresql+psycopg://u:p%40ss@db/x", "postgresql+psycopg://u:***@db/x"),
    ],
)
def test_redact_hides_every_password_in_a_text_and_nothing_else(text, shown):
    assert stores.redact(text) == shown


def test_a_password_in_params_yaml_is_refused_naming_the_variable_and_not_the_password():
    with pytest.raises(ParamsError) as refused:
        resolve(None, sets=["stores.optuna=postgresql://u:hunter2@db:5432/optuna"])
    assert "PGPASSWORD" in str(refused.value) and "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("key", "uri"),
    [
        ("model_repository", "s3://bucket/prefix"),  # no host:port: Triton would wait for AWS
        ("model_repository", "gs://bucket/prefix"),
        ("tracking", "mysql://db/x"),
        ("dvc_remote", "/some/folder"),
        ("optuna", "http://optuna"),
        ("tracking", ""),
    ],
)
def test_a_uri_its_store_cannot_use_is_refused(key, uri):
    with pytest.raises(StoreError):
        stores.check_uri(key, uri)


def test_triton_s3_uris_parse_and_keys_never_leave_the_prefix():
    url = S3Url.parse("s3://https://minio.local:9000/models/team/cifar10")
    assert (url.tls, url.host, url.port, url.bucket, url.prefix) == (
        True,
        "minio.local",
        9000,
        "models",
        "team/cifar10",
    )
    assert url.endpoint == "https://minio.local:9000" and S3Url.parse(url.uri) == url
    assert url.key("wrn_fp32/3/model.onnx") == "team/cifar10/wrn_fp32/3/model.onnx"
    for bad in ("../x", "a/../../x", "/abs", "a//b", "", "a\\b", "./a"):
        with pytest.raises(StoreError):
            url.key(bad)
    with pytest.raises(StoreError):
        S3Url.parse("s3://127.0.0.1:9000/models/../up")


def test_the_option_beats_the_tool_s_variable_which_beats_params_yaml(monkeypatch, tmp_path):
    cfg = StoresConfig()
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    assert stores.resolve(cfg, "optuna", root=tmp_path).uri == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert stores.resolve(cfg, "optuna", root=tmp_path).source == "params.yaml stores.optuna"
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u@db:5432/optuna")
    assert stores.resolve(cfg, "optuna").uri == "postgresql://u@db:5432/optuna"
    assert stores.resolve(cfg, "optuna").source == "$OPTUNA_STORAGE"
    assert stores.resolve(cfg, "optuna", option="sqlite:////x.db").source == "option"
    monkeypatch.setenv("CIFAR10_MODEL_REPOSITORY", "s3://bucket/prefix")  # a form Triton hangs on
    with pytest.raises(StoreError, match=r"\$CIFAR10_MODEL_REPOSITORY"):
        stores.resolve(cfg, "model_repository")


def test_the_embedded_server_gets_an_s3_uri_as_written():
    from pathlib import Path

    from serving.server.environment import ServerConfig

    uri = "s3://127.0.0.1:9000/models/cifar10"
    args = ServerConfig(model_repository=uri).args(Path("/bin/tritonserver"), Path("/b"), Path("/l"))
    assert f"--model-repository={uri}" in args
    folder = ServerConfig(model_repository=Path("model_repository")).repository_arg
    assert folder.startswith("/") and folder.endswith("/model_repository")
