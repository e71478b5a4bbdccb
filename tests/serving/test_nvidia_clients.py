"""NVIDIA's own example clients, unchanged, against a real server on the generated repository.

``ensemble_image_client.py`` sends encoded files as BYTES elements of one batch to ``cifar10``;
``image_client.py`` reads the classifier's input format (NCHW) and asks for the classification
extension (``class_count``). Their printed classes are checked against the same model run in-process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.repository.build import build_repository
from tests.conftest import CLASSES, fp32_tolerance, near_ties
from tests.prerequisites import EXAMPLES, need
from tests.serving.conftest import encode, make_spec, ort_session, random_image, reference_preprocess

pytestmark = pytest.mark.triton
LINE = re.compile(r"^\s+(?P<score>[-0-9.e]+) \((?P<index>\d+)\) = (?P<label>.+)$")


@pytest.fixture(scope="module")
def server(launch, onnx_models, tmp_path_factory):
    need("examples")
    repo = tmp_path_factory.mktemp("nvidia") / "model_repository"
    build_repository(make_spec({1: onnx_models[1]}, production=1), repo)
    return launch(repo)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five files of different sizes and formats, named so the client's sort keeps this order."""
    root = tmp_path_factory.mktemp("nvidia-images")
    shapes = [(32, 32, "PNG"), (32, 32, "JPEG"), (48, 40, "PNG"), (64, 64, "JPEG"), (17, 23, "PNG")]
    for i, (h, w, fmt) in enumerate(shapes):
        (root / f"img{i}.{fmt.lower()}").write_bytes(encode(random_image(100 + i, h, w), fmt))
    return root


def run_example(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def parse(stdout: str) -> list[list[tuple[float, int, str]]]:
    """Every block of "score (index) = label" lines, in the order printed."""
    blocks: list[list[tuple[float, int, str]]] = []
    fresh = True
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m is None:
            fresh = True
            continue
        if fresh:
            blocks.append([])
            fresh = False
        blocks[-1].append((float(m["score"]), int(m["index"]), m["label"]))
    return blocks


def check_topk(block: list[tuple[float, int, str]], logits: np.ndarray, k: int, softmax: bool = True) -> None:
    """k entries, best first, labels matching their indices, scores the (softmax of) ``logits``.

    The ensemble's labelled output is the softmax; a classifier's is its raw logits, which the
    classification extension ranks and prints as they are.
    """
    assert len(block) == k
    probs = np.exp(logits - logits.max()) if softmax else logits
    probs = probs / probs.sum() if softmax else probs
    scores = [s for s, _, _ in block]
    assert scores == sorted(scores, reverse=True)
    for score, index, label in block:
        assert label == CLASSES[index]
        assert score == pytest.approx(float(probs[index]), abs=1e-3)
    tol = fp32_tolerance()
    if not near_ties(logits[None], 2 * tol)[0]:
        assert block[0][1] == int(np.argmax(logits))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_image_client_unchanged(server, folder, onnx_models, protocol):
    url = server.http_endpoint if protocol == "http" else server.url_grpc
    out = run_example(
        "ensemble_image_client.py", "-m", "cifar10", "-c", "3", "-i", protocol, "-u", url, str(folder)
    )
    files = sorted(folder.iterdir())
    blocks = parse(out)
    assert len(blocks) == len(files), out
    session = ort_session(onnx_models[1])
    x = np.stack([reference_preprocess(f.read_bytes()) for f in files])
    logits = session.run(["logits"], {"input": x})[0]
    for f, block, row in zip(files, blocks, logits, strict=True):
        assert f'"{f}"' in out
        check_topk(block, row, 3)


def test_image_client_unchanged_with_classification_extension(server, folder, onnx_models):
    """``image_client.py`` needs FORMAT_NCHW and a labelled output; INCEPTION scaling is its own."""
    image = folder / "img2.png"
    out = run_example(
        "image_client.py",
        "-m",
        "wrn_fp32",
        "-i",
        "grpc",
        "-u",
        server.url_grpc,
        "-s",
        "INCEPTION",
        "-c",
        "3",
        str(image),
    )
    blocks = parse(out)
    assert len(blocks) == 1, out
    # What image_client.py computes before sending: resize to 32x32, scale to [-1, 1], NCHW.
    pixels = np.asarray(Image.open(image).convert("RGB").resize((32, 32), Image.BILINEAR), np.float32)
    x = (pixels / 127.5 - 1.0).transpose(2, 0, 1)[None]
    logits = ort_session(onnx_models[1]).run(["logits"], {"input": x})[0][0]
    check_topk(blocks[0], logits, 3, softmax=False)
