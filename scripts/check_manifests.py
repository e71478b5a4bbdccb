"""Validate the Kubernetes manifests offline: ``python -m scripts.check_manifests [overlay ...]``.

Each overlay under ``deploy/k8s/overlays`` is rendered with ``kubectl kustomize`` (Kustomize is built
into kubectl), then every document is checked:

* core kinds (Deployment, Service, HPA, PDB, Job, ConfigMap...) against Kubernetes' own OpenAPI
  schemas with ``kubernetes-validate --strict`` (an unknown field is an error);
* the KServe ``InferenceService`` against the ``v1beta1`` schema of KServe's CRD (vendored in
  the shared folder beside the project, ``external/kserve``, with its source, version and license;
  ``$CIFAR10_SHARED`` names another), plus what that schema leaves
  to KServe's admission webhook: no unknown field names, ``canaryTrafficPercent`` within 0-100,
  replica counts >= 0 and ``minReplicas <= maxReplicas``, and exactly one predictor implementation.

Exit code 1 and one line per problem when anything fails.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
SHARED = Path(os.environ.get("CIFAR10_SHARED", ROOT.parent / "shared"))
KSERVE_CRD = SHARED / "external" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
KUBERNETES_VERSION = "1.32.0"  # the oldest minor the manifests' APIs are checked against
CUSTOM = {("serving.kserve.io/v1beta1", "InferenceService")}


def render(overlay: Path) -> list[dict[str, Any]]:
    """The overlay's resources as ``kubectl kustomize`` renders them."""
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def problems(docs: list[dict[str, Any]], crd: Path = KSERVE_CRD) -> list[str]:
    """Every problem in ``docs``, each naming the resource; empty when all are valid."""
    import kubernetes_validate

    found = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM:
            found += [f"{where}: {p}" for p in inference_service_problems(doc, crd)]
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            found.append(f"{where}: {str(exc).splitlines()[0]} (at {'.'.join(map(str, exc.path))})")
        except kubernetes_validate.SchemaNotFoundError as exc:
            found.append(f"{where}: no schema ({exc})")
    return found


@functools.cache
def _schema(crd: Path) -> dict[str, Any]:
    document = yaml.safe_load(crd.read_text())
    version = next(v for v in document["spec"]["versions"] if v["name"] == "v1beta1")
    return version["schema"]["openAPIV3Schema"]


def inference_service_problems(doc: dict[str, Any], crd: Path = KSERVE_CRD) -> list[str]:
    """The CRD schema's verdict, then the checks KServe's webhook makes on a cluster."""
    import jsonschema

    schema = _schema(crd)
    found = [
        f"{e.message} (at {'.'.join(map(str, e.absolute_path))})"
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]
    found += [f"unknown field {path}" for path in _unknown_fields(doc, schema, "")]
    for role in ("predictor", "transformer", "explainer"):
        component = (doc.get("spec") or {}).get(role)
        if not isinstance(component, dict):
            continue
        canary = component.get("canaryTrafficPercent")
        if canary is not None and not (isinstance(canary, int) and 0 <= canary <= 100):
            found.append(f"spec.{role}.canaryTrafficPercent must be 0-100, got {canary!r}")
        low, high = component.get("minReplicas"), component.get("maxReplicas")
        for key, value in (("minReplicas", low), ("maxReplicas", high)):
            if value is not None and (not isinstance(value, int) or value < 0):
                found.append(f"spec.{role}.{key} must be an integer >= 0, got {value!r}")
        if isinstance(low, int) and isinstance(high, int) and high and low > high:
            found.append(f"spec.{role}: minReplicas {low} > maxReplicas {high}")
    predictor = (doc.get("spec") or {}).get("predictor") or {}
    kinds = ("model", "triton", "onnx", "sklearn", "pytorch", "tensorflow")
    implementations = [k for k in kinds if k in predictor]
    implementations += ["containers"] if predictor.get("containers") else []
    if len(implementations) != 1:
        found.append(f"spec.predictor needs exactly one implementation, got {implementations or 'none'}")
    return found


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Keys the schema does not declare, where it declares properties and keeps no unknown fields."""
    if isinstance(value, list):
        items = schema.get("items", {})
        return [u for i, v in enumerate(value) for u in _unknown_fields(v, items, f"{path}[{i}]")]
    if not isinstance(value, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    properties = schema.get("properties")
    if properties is None:
        extra = schema.get("additionalProperties")
        sub = extra if isinstance(extra, dict) else {}
        return [u for k, v in value.items() for u in _unknown_fields(v, sub, f"{path}.{k}".lstrip("."))]
    found = []
    for key, item in value.items():
        where = f"{path}.{key}".lstrip(".")
        if key not in properties:
            found.append(where)
        else:
            found += _unknown_fields(item, properties[key], where)
    return found


def main(argv: list[str]) -> int:
    overlays = [Path(a) for a in argv] or sorted(p for p in OVERLAYS.iterdir() if p.is_dir())
    bad = 0
    for overlay in overlays:
        docs = render(overlay)
        found = problems(docs)
        for line in found:
            print(f"{overlay.name}: {line}")
        print(f"{overlay.name}: {len(docs)} resources, {'OK' if not found else f'{len(found)} problem(s)'}")
        bad += len(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
