"""A perturbation made ready to draw: its (3, H, W) array, pooled to a side the browser draws
fluidly, and the z-range its surfaces share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...errors import InvalidInputError

#: The z-range of the paper's Fig. 1 for every attack but ML-DeepFool, in [0,1] pixel units.
PAPER_Z_RANGE = 0.03
#: Largest pooled side shown in the browser by default.
DEFAULT_MAX_SIDE = 128
Pooling = Literal["maxabs", "mean"]
POOLINGS: dict[str, str] = {"maxabs": "max |r| (signed)", "mean": "mean"}


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _as_chw(r: Any, what: str = "perturbation") -> np.ndarray:
    arr = _np(r).astype(np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise InvalidInputError(f"the {what} must have shape (3, H, W), got {tuple(arr.shape)}")
    return arr


def pool_factor(height: int, width: int, max_side: int | None) -> int:
    """Block side that brings the larger image side to at most ``max_side`` (1 = no pooling)."""
    if max_side is None:
        return 1
    if max_side < 1:
        raise InvalidInputError(f"max_side must be at least 1, got {max_side}")
    return max(1, math.ceil(max(height, width) / max_side))


def pool2d(a: np.ndarray, factor: int, mode: Pooling = "maxabs") -> np.ndarray:
    """Pool a 2-D array in ``factor`` x ``factor`` blocks (the last blocks may be partial).

    ``maxabs`` keeps, per block, the value of largest magnitude with its sign (what a reader of
    a distortion map looks for: the strongest change); ``mean`` averages the block's pixels.
    """
    if mode not in POOLINGS:
        raise InvalidInputError(f"pooling must be one of {', '.join(POOLINGS)}, got {mode!r}")
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise InvalidInputError(f"pool2d needs a 2-D array, got shape {a.shape}")
    if factor <= 1:
        return a.copy()
    h, w = a.shape
    hb, wb = math.ceil(h / factor), math.ceil(w / factor)
    padded = np.full((hb * factor, wb * factor), np.nan)
    padded[:h, :w] = a
    blocks = padded.reshape(hb, factor, wb, factor).transpose(0, 2, 1, 3).reshape(hb, wb, factor * factor)
    if mode == "mean":
        return np.nanmean(blocks, axis=2)
    magnitude = np.where(np.isnan(blocks), -1.0, np.abs(blocks))
    pick = magnitude.argmax(axis=2)[..., None]
    return np.take_along_axis(blocks, pick, axis=2)[..., 0]


def _block_centres(n: int, factor: int) -> np.ndarray:
    """Pixel coordinate of the centre of each block along an axis of length ``n``."""
    starts = np.arange(0, n, factor)
    ends = np.minimum(starts + factor, n) - 1
    return (starts + ends) / 2.0


@dataclass(frozen=True)
class PooledPerturbation:
    values: np.ndarray  # (3, h, w)
    rows: np.ndarray  # (h,) pixel row of each block's centre
    cols: np.ndarray  # (w,) pixel column of each block's centre
    factor: int
    mode: str


def pool_perturbation(r: Any, max_side: int | None = DEFAULT_MAX_SIDE, mode: Pooling = "maxabs") -> PooledPerturbation:
    """Each channel of r (3, H, W) pooled to at most ``max_side`` per side (None: full size)."""
    arr = _as_chw(r)
    f = pool_factor(arr.shape[1], arr.shape[2], max_side)
    values = np.stack([pool2d(arr[c], f, mode) for c in range(3)])
    return PooledPerturbation(values, _block_centres(arr.shape[1], f), _block_centres(arr.shape[2], f), f, mode)


def _nice_ceil(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 (times a power of ten) that is >= v."""
    if v <= 0:
        return PAPER_Z_RANGE
    exp = math.floor(math.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        c = m * 10.0**exp
        if c >= v * (1 - 1e-12):
            return float(f"{c:.12g}")
    return 10.0 ** (exp + 1)


def auto_z_range(r: Any, paper: float = PAPER_Z_RANGE) -> float:
    """Half-width of the z-range: the paper's (+-0.03) when the data fit in it, else the
    data's largest |r| rounded up to a round number (the paper drew ML-DeepFool on [-1, 1])."""
    m = float(np.abs(_np(r)).max()) if _np(r).size else 0.0
    if m <= paper:
        return paper
    return min(_nice_ceil(m), 1.0) if m <= 1.0 else _nice_ceil(m)  # |r| <= 1 for images in [0,1]


#: How the z-range of the surfaces is chosen (see :func:`z_range_for`).
Z_MODES: dict[str, str] = {
    "auto": "auto (paper's +-0.03, wider when the data need it)",
    "paper": "paper's +-0.03",
    "data": "fit the data (largest |r|)",
    "custom": "custom",
}


def z_range_for(r: Any, mode: str = "auto", custom: float | None = None) -> float:
    """Half-width of the z-range for perturbation r under ``mode`` (keys of :data:`Z_MODES`)."""
    if mode == "auto":
        return auto_z_range(r)
    if mode == "paper":
        return PAPER_Z_RANGE
    if mode == "data":
        m = float(np.abs(_np(r)).max()) if _np(r).size else 0.0
        return m if m > 0 else PAPER_Z_RANGE
    if mode == "custom":
        if custom is None or not custom > 0:
            raise InvalidInputError(f"a custom z-range must be a positive number, got {custom!r}")
        return float(custom)
    raise InvalidInputError(f"z-range mode must be one of {', '.join(Z_MODES)}, got {mode!r}")
