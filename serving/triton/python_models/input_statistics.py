"""Per-image input statistics and their histogram bins: one implementation, in and out of Triton.

Runs inside Triton's python backend stub (shipped beside ``preprocess.py`` and the router's copy of
it), so it imports numpy only. The export stage imports the same module to compute the reference
histograms of each exported form (:mod:`monitoring.quality_reference`): what the server counts and
what it is compared with cannot drift apart.

Six statistics per image, each a number a shift in the input population moves:

* ``brightness`` - mean luminance (ITU-R 601 weights) on [0, 1];
* ``contrast`` - standard deviation of that luminance;
* ``saturation`` - mean HSV saturation ``(max - min) / max`` of the RGB channels;
* ``sharpness`` - mean absolute 4-neighbour Laplacian of the luminance: blur and pixelation lower
  it, noise raises it;
* ``encoded_bytes_per_pixel`` - size of the encoded file per original pixel: JPEG re-compression and
  noise move it, and unlike the raw size it does not follow the resolution;
* ``original_pixels`` - width x height as sent, before the resize to the model's input.

The first four are measured on the model-sized image (after the resize), so a 4K photo costs the
same as a 32 x 32 one.
"""

from __future__ import annotations

import numpy as np

STATISTICS = (
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "encoded_bytes_per_pixel",
    "original_pixels",
)
LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def measure(pixels: np.ndarray, encoded_bytes: np.ndarray, original_pixels: np.ndarray) -> np.ndarray:
    """``N x len(STATISTICS)`` float64: the statistics of uint8 ``N x H x W x 3`` RGB images."""
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 pixels, got {list(pixels.shape)}")
    rgb = pixels.astype(np.float32) / np.float32(255.0)
    luma = rgb @ LUMA
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-12), 0.0)
    lap = np.zeros_like(luma)
    inner_luma = luma[:, 1:-1, 1:-1]
    neighbours = luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:]
    lap[:, 1:-1, 1:-1] = 4 * inner_luma - neighbours
    inner = max((luma.shape[1] - 2) * (luma.shape[2] - 2), 1)
    original = np.asarray(original_pixels, dtype=np.float64)
    out = np.empty((len(pixels), len(STATISTICS)), dtype=np.float64)
    out[:, 0] = luma.mean(axis=(1, 2))
    out[:, 1] = luma.std(axis=(1, 2))
    out[:, 2] = saturation.mean(axis=(1, 2))
    out[:, 3] = np.abs(lap).sum(axis=(1, 2)) / inner
    out[:, 4] = np.asarray(encoded_bytes, dtype=np.float64) / np.maximum(original, 1.0)
    out[:, 5] = original
    return out


def bin_edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner edges at the reference's quantiles: ``bins`` bins of equal reference mass where the
    values allow it (repeated quantiles merge, so a constant statistic gets one edge, two bins)."""
    quantiles = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1])
    return [float(v) for v in np.unique(quantiles)]


def bin_index(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin of each value: 0 below the first edge, ``len(edges)`` above the last (right-closed)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")


def histogram(values: np.ndarray, edges: list[float]) -> list[int]:
    """Counts per bin (``len(edges) + 1`` of them)."""
    return np.bincount(bin_index(values, edges), minlength=len(edges) + 1).astype(int).tolist()
