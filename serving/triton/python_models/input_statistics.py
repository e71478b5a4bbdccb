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
LUMA = (np.float32(0.299 / 255), np.float32(0.587 / 255), np.float32(0.114 / 255))


def measure(planes: np.ndarray, encoded_bytes: np.ndarray, original_pixels: np.ndarray) -> np.ndarray:
    """``N x len(STATISTICS)`` float64: the statistics of uint8 ``N x 3 x H x W`` RGB images.

    Planar (channel-first), the layout the decoder already holds: a reduction over a 3-wide last
    axis costs numpy ten times more than three element-wise passes over whole planes, and this runs
    on every served image.
    """
    if planes.ndim != 4 or planes.shape[1] != 3:
        raise ValueError(f"expected N x 3 x H x W pixels, got {list(planes.shape)}")
    n = len(planes)
    r, g, b = planes[:, 0], planes[:, 1], planes[:, 2]
    luma = r * LUMA[0] + g * LUMA[1] + b * LUMA[2]  # float32, N x H x W, on [0, 1]
    high = np.maximum(np.maximum(r, g), b)
    low = np.minimum(np.minimum(r, g), b)
    saturation = (high - low).astype(np.float32) / np.maximum(high, 1).astype(np.float32)
    inner = luma[:, 1:-1, 1:-1]
    lap = 4 * inner - luma[:, :-2, 1:-1] - luma[:, 2:, 1:-1] - luma[:, 1:-1, :-2] - luma[:, 1:-1, 2:]
    flat = luma.reshape(n, -1)
    mean = flat.mean(axis=1, dtype=np.float64)
    original = np.asarray(original_pixels, dtype=np.float64)
    out = np.empty((n, len(STATISTICS)), dtype=np.float64)
    out[:, 0] = mean
    out[:, 1] = np.sqrt(np.maximum(np.square(flat, dtype=np.float64).mean(axis=1) - mean * mean, 0.0))
    out[:, 2] = saturation.reshape(n, -1).mean(axis=1, dtype=np.float64)
    out[:, 3] = np.abs(lap).reshape(n, -1).mean(axis=1, dtype=np.float64) if lap.size else 0.0
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
