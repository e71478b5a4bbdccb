"""The label-free estimate's arithmetic and the input statistics, as general properties, no server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from monitoring import accuracy_estimate as est
from serving.triton.python_models.input_statistics import STATISTICS, bin_edges, histogram, measure
from tests.serving.conftest import CLASSES
from training.corruptions import KINDS, SEVERITIES, corrupt, decode, encoding_of


def calibrated(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn so that ``softmax(logits / temperature)`` is exactly calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 10))
    p = est.softmax(logits, temperature)
    labels = np.array([rng.choice(10, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_recovers_the_one_that_calibrates(temperature):
    logits, labels = calibrated(4000, temperature, seed=int(temperature * 10))
    assert est.fit_temperature(logits, labels) == pytest.approx(temperature, rel=0.1)


@pytest.mark.parametrize("seed", range(5))
def test_the_atc_threshold_reproduces_the_held_out_accuracy(seed):
    logits, labels = calibrated(1000, 1.0, seed)
    scores = est.confidence(logits)
    correct = logits.argmax(1) == labels
    t = est.atc_threshold(scores, correct)
    assert abs(est.atc(scores, t) - correct.mean()) <= 1 / len(labels)


@pytest.mark.parametrize("seed", range(20))
def test_the_class_mix_bound_never_falls_below_the_true_accuracy(seed):
    """With the images' class mix equal to the reference, at most sum_c min(p_c, q_c) can be right,
    whatever the predictions, so capping ATC by it never makes an overestimate worse."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), 50)
    skew = rng.dirichlet(np.full(10, 0.3))
    predicted = np.where(rng.random(500) < rng.random(), labels, rng.choice(10, 500, p=skew))
    truth = float(np.mean(predicted == labels))
    bound = est.class_mix_bound(np.bincount(predicted, minlength=10), np.full(10, 0.1))
    assert bound >= truth - 1e-12
    for atc_value in rng.random(5):
        assert abs(est.combined(atc_value, bound) - truth) <= abs(atc_value - truth) + 1e-12


def test_cot_and_the_wilson_interval_behave_at_the_extremes():
    sure_and_even = np.eye(10)[np.repeat(np.arange(10), 10)]
    assert est.cot(sure_and_even, np.full(10, 0.1)) == pytest.approx(1.0)
    all_frog = np.eye(10)[np.full(100, 6)]
    assert est.cot(all_frog, np.full(10, 0.1)) == pytest.approx(0.1)
    low, high = est.wilson_interval(90, 100, 1.96)
    assert low < 0.9 < high and est.wilson_interval(0, 0, 1.96) == (0.0, 1.0)


def planar(images: np.ndarray) -> np.ndarray:
    """N x H x W x 3 -> N x 3 x H x W, the decoder's layout."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _images(n: int = 60) -> np.ndarray:
    """Smooth natural-ish images: gradients plus a few blobs, so blur and noise have work to do."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:32, 0:32]
    out = []
    for _ in range(n):
        base = rng.uniform(40, 200, 3)[None, None, :] + (xx[..., None] * rng.uniform(-3, 3, 3))
        for _ in range(3):
            cy, cx, r = (*rng.integers(4, 28, 2).tolist(), rng.integers(3, 8))
            base = base + 60 * ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None] * rng.choice([-1, 1])
        out.append(np.clip(base, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_each_corruption_moves_the_statistic_it_should():
    images = _images()
    col = {name: i for i, name in enumerate(STATISTICS)}
    source = [_jpeg(i, 75) for i in images]  # encoded as the mirror's files are
    clean = measure(planar(decode(source)), np.array([len(f) for f in source]), 1024)

    def mean(kind: str, name: str) -> float:
        files = corrupt(images, kind, "strong", seed=0, encoding=encoding_of(source))
        values = measure(planar(decode(files)), np.array([len(f) for f in files]), 1024)
        return float(values[:, col[name]].mean())

    assert mean("blur", "sharpness") < clean[:, col["sharpness"]].mean()
    assert mean("pixelate", "sharpness") < clean[:, col["sharpness"]].mean()
    assert mean("gaussian_noise", "sharpness") > clean[:, col["sharpness"]].mean()
    assert mean("brightness", "brightness") > clean[:, col["brightness"]].mean()
    assert mean("contrast", "contrast") < clean[:, col["contrast"]].mean()
    assert mean("jpeg", "encoded_bytes_per_pixel") < clean[:, col["encoded_bytes_per_pixel"]].mean()
    big = measure(planar(images[:2]), np.array([10, 10]), np.array([64 * 64, 4096 * 2160]))
    assert big[:, col["original_pixels"]].tolist() == [4096, 4096 * 2160]


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_corruptions_are_seeded_and_every_kind_and_severity_decodes():
    images = _images(4)
    for kind in KINDS:
        for severity in SEVERITIES:
            files = corrupt(images, kind, severity, seed=3)
            assert files == corrupt(images, kind, severity, seed=3)
            assert decode(files).shape == images.shape
    assert corrupt(images, "gaussian_noise", "mild", seed=3) != corrupt(
        images, "gaussian_noise", "mild", seed=4
    )
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images, "fog", "mild")


@pytest.mark.parametrize("quality", [35, 75, 95])
def test_the_source_encoding_is_recognised_so_the_format_is_not_a_shift(quality):
    assert encoding_of([_jpeg(_images(1)[0], quality)]) == ("JPEG", quality)
    assert encoding_of([_png(_images(1)[0])]) == ("PNG", 0)


def test_quantile_bins_hold_equal_reference_mass_and_merge_repeated_values():
    values = np.random.default_rng(0).normal(size=10_000)
    counts = histogram(values, bin_edges(values, 10))
    assert len(counts) == 10 and max(counts) - min(counts) <= 2
    constant = np.full(100, 1024.0)
    edges = bin_edges(constant, 10)
    assert edges == [1024.0] and histogram(constant, edges) == [100, 0]
    assert histogram(np.array([4096.0]), edges) == [0, 1]


def test_cifar10_data_corrupt_writes_labelled_folders_encoded_like_the_source(
    small_prepared, tmp_path, capsys
):
    from commands.main import main

    out = tmp_path / "corrupted"
    with pytest.raises(SystemExit) as done:
        main(["data", "corrupt", "--data", str(small_prepared), "--out", str(out), "--kinds", "blur,jpeg",
              "--severities", "strong"])  # fmt: skip
    assert done.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == ["blur-strong", "jpeg-strong"]
    files = sorted((out / "blur-strong").rglob("*.*"))
    assert len(files) == 20 and {f.parent.name for f in files} == set(CLASSES)
    with pytest.raises(SystemExit) as done:
        main(["data", "corrupt", "--data", str(small_prepared), "--out", str(out), "--kinds", "fog"])
    assert done.value.code == 2 and "unknown corruption or severity: fog" in capsys.readouterr().err
