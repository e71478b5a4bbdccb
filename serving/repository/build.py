"""Write a Triton model repository from a :class:`~serving.repository.spec.RepositorySpec`, atomically.

The repository is a pure function of the spec. It is assembled in a hidden sibling directory and
swapped in with one ``renameat2(RENAME_EXCHANGE)`` (two renames where the filesystem lacks it), so
Triton - or a crashed build - never sees a half-written repository.

Details that matter to a running server:

* A build whose result is byte-identical to what is on disk changes nothing (returns ``False``), so
  re-applying the same spec never makes Triton reload anything.
* Files identical to the current ones are hard-linked from the current tree (artifacts from their
  source), never copied twice and never symlinked out of the repository.
* Triton 2.51 decides that a model changed from the newest mtime *or ctime* below its folder, so
  after a swap every model looks modified and is reloaded when it is next loaded or polled; callers
  (:mod:`serving.rollout.apply`) load only the models whose loaded generation (a digest each config
  carries, :mod:`serving.repository.generation`) differs from the repository's. A python model ships its
  bytecode, because the stub would otherwise write ``__pycache__`` on first import and make an
  untouched model look modified.
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from common.params_schema import GpuServingConfig
from serving.repository import generation
from serving.repository.atomic_fs import (
    RepositoryBusy,
    RepositoryError,
    link_or_copy,
    repository_lock,
    same_file,
    same_tree,
    swap_in,
)
from serving.repository.gpu_configs import cache_folders
from serving.repository.model_configs import (
    CHANNELS,
    IMAGE_SIZE,
    LABELS_FILE,
    classifier_config,
    ensemble_config,
    postprocess_config,
    preprocess_config,
    router_config,
)
from serving.repository.spec import (
    POSTPROCESS,
    PREPROCESS,
    ROUTER,
    ROUTER_HALT_FILE,
    RepositorySpec,
    spec_from_dict,
    spec_to_dict,
)
from serving.repository.warmup import warmup_files

SPEC_FILE = ".spec.json"
__all__ = [
    "SPEC_FILE",
    "RepositoryBusy",
    "RepositoryError",
    "build_repository",
    "model_generations",
    "python_model_source",
    "read_deployed_spec",
    "repository_layout",
    "repository_lock",
]


def python_model_source(name: str) -> bytes:
    """Source of a python model shipped in :mod:`serving.triton.python_models`."""
    return resources.files("serving.triton.python_models").joinpath(f"{name}.py").read_bytes()


def repository_layout(spec: RepositorySpec) -> tuple[dict[str, bytes | Path], set[str]]:
    """Relative path -> content (bytes, or a Path to link) and the empty directories Triton needs."""
    files, dirs, _ = _layout(spec)
    return files, dirs


def model_generations(spec: RepositorySpec) -> dict[str, str]:
    """Model -> the generation its config carries (:mod:`serving.repository.generation`)."""
    return _layout(spec)[2]


def _layout(spec: RepositorySpec) -> tuple[dict[str, bytes | Path], set[str], dict[str, str]]:
    labels = ("\n".join(spec.classes) + "\n").encode()
    files: dict[str, bytes | Path] = {}
    configs = {}
    for model in spec.classifiers:
        configs[model.name] = classifier_config(model, spec)
        files[f"{model.name}/{LABELS_FILE}"] = labels
        for served in model.versions:
            files[f"{model.name}/{served.version}/{model.model_filename}"] = served.artifact
    configs[PREPROCESS] = preprocess_config(spec)
    files[f"{PREPROCESS}/1/model.py"] = python_model_source("preprocess")
    files[f"{PREPROCESS}/1/{DECODING}.py"] = python_model_source(DECODING)
    configs[POSTPROCESS] = postprocess_config(spec)
    files[f"{POSTPROCESS}/{LABELS_FILE}"] = labels
    files[f"{POSTPROCESS}/1/model.py"] = python_model_source("postprocess")
    if spec.release is not None:
        configs[ROUTER] = router_config(spec)
        files[f"{ROUTER}/{LABELS_FILE}"] = labels
        files[f"{ROUTER}/1/model.py"] = python_model_source("router")
        files[f"{ROUTER}/1/{DECODING}.py"] = python_model_source(DECODING)  # preprocess's Decoder
    files.update(quality_files(spec))
    configs[spec.ensemble_name] = ensemble_config(spec)
    files[f"{spec.ensemble_name}/{LABELS_FILE}"] = labels  # the classification extension's labels
    files.update(warmup_files(spec))
    generations = generation.stamp(configs, files)
    files[SPEC_FILE] = (json.dumps(spec_to_dict(spec), indent=2) + "\n").encode()
    # Triton only loads an ensemble that has a (here empty) version directory.
    return files, {f"{spec.ensemble_name}/1"}, generations


QUALITY_MODULES = ("quality_metrics", "input_statistics")
DECODING = "image_decoding"  # the decoder preprocess, the router and the MLflow pyfunc share


def quality_files(spec: RepositorySpec) -> dict[str, bytes | Path]:
    """The quality counters' code beside each python model, and the references each one counts with.

    ``<python model>/quality/<classifier>/<version>.json`` for every version that python model labels
    (postprocess and the router: production and a release's candidate; preprocess: production):
    each folder carries its own copy, so a model loaded from object storage finds it too.
    """
    files: dict[str, bytes | Path] = {}
    routes = [(spec.target, spec.target.production)]
    if spec.release is not None:
        routes.append((spec.classifier(spec.release.candidate_model), spec.release.candidate_version))
    users = {POSTPROCESS: routes, PREPROCESS: routes[:1]} | ({ROUTER: routes} if spec.release else {})
    for python_model, labelled in users.items():
        for module in QUALITY_MODULES:
            files[f"{python_model}/1/{module}.py"] = python_model_source(module)
        for model, number in labelled:
            served = next(v for v in model.versions if v.version == number)
            if served.quality_reference is not None:
                files[f"{python_model}/quality/{model.name}/{number}.json"] = served.quality_reference
    return files


def read_deployed_spec(dest: Path) -> RepositorySpec | None:
    """The spec the repository at ``dest`` was built from, or ``None`` if there is none."""
    path = Path(dest) / SPEC_FILE
    if not path.is_file():
        return None
    return spec_from_dict(json.loads(path.read_text()))


def build_repository(spec: RepositorySpec, dest: Path) -> bool:
    """Make ``dest`` the repository for ``spec``; ``False`` (and nothing touched) if it already is.

    Raises:
        SpecError: the spec is inconsistent or an artifact is missing.
        RepositoryError: ``dest`` holds something this function did not write.
    """
    spec.validate()
    dest = Path(dest).absolute()
    files, dirs = repository_layout(spec)
    with repository_lock(dest):
        for stale in dest.parent.glob(f".{dest.name}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        old = dest if dest.is_dir() else None
        if old is not None and any(old.iterdir()) and not (old / SPEC_FILE).is_file():
            raise RepositoryError(
                f"refusing to replace {dest}: it was not written by build_repository "
                f"(no {SPEC_FILE}); move it away first"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
        try:
            _write_tree(tmp, files, dirs, old)
            if old is not None:
                _carry_caches(tmp, old, engine_caches(spec))
                _carry_halt(tmp, old)
            if old is not None and same_tree(tmp, old):
                return False
            os.chmod(tmp, 0o755)
            swap_in(tmp, dest)
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _carry_halt(root: Path, old: Path) -> None:
    """Keep a release's halt order while the router stays: the rollout that retires the router swaps
    in new trees, and the router must still find the order there (it checks the file per batch).
    The order names its candidate, so a later release's router ignores a stale one."""
    order = old / ROUTER / ROUTER_HALT_FILE
    if order.is_file() and not order.is_symlink() and (root / ROUTER).is_dir():
        shutil.copyfile(order, root / ROUTER / ROUTER_HALT_FILE)


def engine_caches(spec: RepositorySpec) -> list[str]:
    """Folders the server writes into the repository (ORT's TensorRT engine caches) that stay valid.

    One per served version of each GPU ONNX classifier (see ``gpu_configs.cache_folders``): the cache
    of a version no longer served, or built with other engine settings, is not carried.
    """
    gpu = spec.gpu or GpuServingConfig()
    if gpu.onnx_accelerator != "tensorrt":
        return []
    dims = [CHANNELS, IMAGE_SIZE, IMAGE_SIZE]
    return [
        f"{m.name}/{folder}"
        for m in spec.classifiers
        if m.kind == "KIND_GPU" and m.backend == "onnxruntime"
        for folder in cache_folders(m, gpu, dims).values()
    ]


def _carry_caches(root: Path, old: Path, caches: list[str]) -> None:
    """Hard-link every file of each cache folder from the current tree into the new one.

    An engine takes minutes to build and depends only on the version's file, the engine settings
    (both in the folder's name), the TensorRT version and the GPU; without this every sync would
    swap the cache away.
    """
    for rel in caches:
        source = old / rel
        if not source.is_dir() or source.is_symlink():
            continue
        for path, _, names in os.walk(source):
            target = root / rel / os.path.relpath(path, source)
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                if (Path(path) / name).is_file() and not (Path(path) / name).is_symlink():
                    link_or_copy(Path(path) / name, target / name)


def _write_tree(root: Path, files: dict[str, bytes | Path], dirs: set[str], old: Path | None) -> None:
    reused: set[str] = set()
    for rel in sorted(dirs):
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel, content in sorted(files.items()):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        current = old / rel if old is not None else None
        if current is not None and current.is_file() and not current.is_symlink():
            if isinstance(content, Path):
                same = same_file(content, current)
            else:
                same = current.read_bytes() == content
            if same:  # keep the current inode, hence its mtime: Triton sees nothing new
                link_or_copy(current, target)
                reused.add(rel)
                continue
        if isinstance(content, Path):
            link_or_copy(content.resolve(), target)
        else:
            target.write_bytes(content)
    for rel in sorted(files):
        if rel.endswith(".py"):
            _add_bytecode(root, rel, old if rel in reused else None)


def _add_bytecode(root: Path, rel: str, old: Path | None) -> None:
    """Ship the bytecode of a python model in its ``__pycache__``.

    Otherwise the python stub writes ``__pycache__`` into the version folder on first import (its
    embedded interpreter ignores ``PYTHONDONTWRITEBYTECODE``). That bumps the folder's mtime, so Triton
    treats the model as modified and reloads it on every later load request that polls it. A
    checked-hash ``.pyc`` is valid whatever the file times, so the stub never rewrites it. Caches of
    an unchanged source (including other Python versions' ones) are carried over from ``old``.
    """
    cache = root / importlib.util.cache_from_source(rel)
    cache.parent.mkdir(exist_ok=True)
    if old is not None:
        stem = Path(rel).stem
        for pyc in (old / rel).parent.joinpath("__pycache__").glob(f"{stem}.*.pyc"):
            link_or_copy(pyc, cache.parent / pyc.name)
    if not cache.exists():
        py_compile.compile(
            str(root / rel),
            cfile=str(cache),
            dfile=rel,
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )
