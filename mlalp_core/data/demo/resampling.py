"""Deterministic resampling and colour for the demo scenes: elementwise IEEE arithmetic only, so
that results do not depend on the CPU or BLAS."""

from __future__ import annotations

import numpy as np


def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Index and weight arrays (n_out, T) of box-filter (area) downsampling n_in -> n_out."""
    scale = n_in / n_out
    taps = int(np.ceil(scale)) + 1
    idx = np.zeros((n_out, taps), dtype=np.int64)
    w = np.zeros((n_out, taps), dtype=np.float64)
    for j in range(n_out):
        lo, hi = j * scale, (j + 1) * scale
        first = int(np.floor(lo))
        for t in range(taps):
            i = first + t
            if i >= n_in:
                break
            overlap = min(hi, i + 1) - max(lo, i)
            if overlap > 0:
                idx[j, t] = i
                w[j, t] = overlap / scale
    return idx, w


def _keys_taps(n_in: int, n_out: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Bicubic (Keys, a = -0.5) taps for upsampling n_in -> n_out on an input zero-padded by pad."""
    a = -0.5
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    base = np.floor(src).astype(np.int64)
    idx = np.stack([base + k for k in (-1, 0, 1, 2)], axis=1)
    dist = np.abs(src[:, None] - idx)
    d2 = dist * dist  # products, not pow(): NumPy may dispatch pow to CPU-specific code
    d3 = d2 * dist
    w = np.where(dist <= 1, (a + 2) * d3 - (a + 3) * d2 + 1,
                 np.where(dist < 2, a * d3 - 5 * a * d2 + 8 * a * dist - 4 * a, 0.0))
    return idx + pad, w


def _apply_taps(arr: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """sum_t w[:, t] * arr.take(idx[:, t], axis): resampling along one axis, fixed order."""
    shape = [1] * arr.ndim
    shape[axis] = idx.shape[0]
    out = np.zeros(arr.shape[:axis] + (idx.shape[0],) + arr.shape[axis + 1 :], dtype=np.float64)
    for t in range(idx.shape[1]):
        out += w[:, t].reshape(shape) * np.take(arr, idx[:, t], axis=axis)
    return out


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """Piecewise-linear HSV -> RGB (no trigonometry)."""
    h6 = (h % 1.0) * 6.0
    rgb = np.array(
        [
            min(max(abs(h6 - 3.0) - 1.0, 0.0), 1.0),
            min(max(2.0 - abs(h6 - 2.0), 0.0), 1.0),
            min(max(2.0 - abs(h6 - 4.0), 0.0), 1.0),
        ]
    )
    return v * (1.0 - s + s * rgb)
