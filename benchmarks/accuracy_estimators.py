"""Label-free accuracy estimators on seeded corruptions: the mean absolute error of each method.

In process (PyTorch, fp32), no server: this compares *methods*, the served path is measured by
``benchmarks/quality_table.py``. The test split is halved (seeded): one half calibrates (temperature,
ATC threshold, class mix), ``--images`` of the other half are corrupted six ways at three severities
(:mod:`training.corruptions`), and every method estimates each set's accuracy without its labels::

    python -m benchmarks.accuracy_estimators --prepared data/prepared \
        --weights wrn28_10_cifar10_jpeg.fp16.safetensors --images 500

Logits are cached in ``--cache`` (an ``.npz``), so rerunning to compare methods costs nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from common.params import DataConfig
from monitoring import accuracy_estimate as est
from training.checkpoint import load_model
from training.corruptions import KINDS, SEVERITIES, corrupt, decode
from training.engine import predict_logits


def _logits(model, images: np.ndarray, data: DataConfig) -> np.ndarray:
    with torch.inference_mode():
        return predict_logits(model, images, data, torch.device("cpu"), batch_size=250)


def collect(prepared: Path, weights: Path, images: int, seed: int, cache: Path) -> dict[str, np.ndarray]:
    if cache.is_file():
        return dict(np.load(cache))
    data = DataConfig()
    x, y = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    order = np.random.default_rng(seed).permutation(len(x))
    calib, held = order[: len(x) // 2], order[len(x) // 2 :][:images]
    model = load_model(weights)
    out = {"calib_logits": _logits(model, x[calib], data), "calib_labels": y[calib], "labels": y[held]}
    out["clean"] = _logits(model, x[held], data)
    for kind in KINDS:
        for severity in SEVERITIES:
            pixels = decode(corrupt(x[held], kind, severity, seed))
            out[f"{kind}-{severity}"] = _logits(model, pixels, data)
            print(f"{kind}-{severity}: done", flush=True)
    np.savez(cache, **out)
    return out


def methods(calib_logits: np.ndarray, calib_labels: np.ndarray) -> dict:
    """Each method as ``logits -> estimate``, calibrated on the held-out half."""
    correct = calib_logits.argmax(1) == calib_labels
    mix = np.bincount(calib_labels, minlength=calib_logits.shape[1]).astype(float)
    temperature = est.fit_temperature(calib_logits, calib_labels)
    t_plain = est.atc_threshold(est.confidence(calib_logits), correct)
    t_scaled = est.atc_threshold(est.confidence(calib_logits, temperature), correct)

    def entropy_score(logits: np.ndarray) -> np.ndarray:
        p = est.softmax(logits, temperature)
        return (p * np.log(np.clip(p, 1e-12, 1))).sum(1)

    t_entropy = est.atc_threshold(entropy_score(calib_logits), correct)
    calib_conf = est.confidence(calib_logits, temperature).mean()

    def bound(logits: np.ndarray) -> float:
        return est.class_mix_bound(np.bincount(logits.argmax(1), minlength=len(mix)), mix)

    print(f"temperature {temperature:.3f}; held-out accuracy {correct.mean():.4f}")
    return {
        "ATC": lambda z: est.atc(est.confidence(z), t_plain),
        "ATC+T": lambda z: est.atc(est.confidence(z, temperature), t_scaled),
        "ATC-NE+T": lambda z: est.atc(entropy_score(z), t_entropy),
        "DoC+T": lambda z: correct.mean() - (calib_conf - est.confidence(z, temperature).mean()),
        "COT+T": lambda z: est.cot(est.softmax(z, temperature), mix),
        "ATC+T∧mix": lambda z: est.combined(est.atc(est.confidence(z, temperature), t_scaled), bound(z)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("reports/estimator_logits.npz"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = collect(args.prepared, args.weights, args.images, args.seed, args.cache)
    estimators = methods(out["calib_logits"], out["calib_labels"])
    labels = out["labels"]
    sets = ["clean"] + [f"{k}-{s}" for k in KINDS for s in SEVERITIES]
    errors: dict[str, list[float]] = {name: [] for name in estimators}
    print(f"{'set':<24}{'true':>7}" + "".join(f"{name:>11}" for name in estimators))
    for name in sets:
        logits = out[name]
        truth = float(np.mean(logits.argmax(1) == labels))
        row = f"{name:<24}{100 * truth:>7.1f}"
        for method, fn in estimators.items():
            value = fn(logits)
            if name != "clean":
                errors[method].append(abs(value - truth))
            row += f"{100 * value:>11.1f}"
        print(row)
    print(f"{'MAE (18 shifted sets)':<31}" + "".join(f"{100 * np.mean(e):>11.2f}" for e in errors.values()))
    print(f"{'max abs error':<31}" + "".join(f"{100 * np.max(e):>11.2f}" for e in errors.values()))


if __name__ == "__main__":
    main()
