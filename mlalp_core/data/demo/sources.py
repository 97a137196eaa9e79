"""The demo scenes' sources, split once per process: scikit-learn's handwritten digits (split per
class) and scikit-image's photographs (each cut in two), at the scales scenes are cut from."""

from __future__ import annotations

import functools

import numpy as np

from .resampling import _apply_taps, _area_taps, _keys_taps
from .task import DEMO_LABELS, HALO, SCENE_SIZE, _check_split

#: Background photographs: scikit-image loader name, and whether it is a grey texture (tinted).
BACKGROUNDS: tuple[tuple[str, bool], ...] = (
    ("astronaut", False),
    ("chelsea", False),
    ("coffee", False),
    ("immunohistochemistry", False),
    ("brick", True),
    ("grass", True),
    ("gravel", True),
)
_TRAIN_FRACTION_DIGITS = 0.7
_TRAIN_FRACTION_PHOTO = 0.6
_LEVELS = (0.35, 0.5, 0.7, 1.0)  # photo scales from which 96x96 crops are cut
_DIGIT_SPLIT_SEED = 20240611


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float64) / 16.0, d.target.astype(np.int64)


@functools.cache
def digit_split(split: str) -> np.ndarray:
    """Indices into scikit-learn's digits used by ``split``; train and test are disjoint."""
    _check_split(split)
    _, target = _digits()
    rng = np.random.Generator(np.random.PCG64(_DIGIT_SPLIT_SEED))
    chosen = []
    for c in range(len(DEMO_LABELS)):
        members = np.flatnonzero(target == c)
        members = members[rng.permutation(members.size)]
        n_train = int(round(_TRAIN_FRACTION_DIGITS * members.size))
        chosen.append(members[:n_train] if split == "train" else members[n_train:])
    return np.sort(np.concatenate(chosen))


@functools.cache
def _class_members(split: str) -> tuple[np.ndarray, ...]:
    _, target = _digits()
    idx = digit_split(split)
    return tuple(idx[target[idx] == c] for c in range(len(DEMO_LABELS)))


@functools.cache
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    arr = np.asarray(img, dtype=np.float64) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr[:, :, :3]


def photo_region(name: str, split: str) -> tuple[slice, slice]:
    """(rows, cols) of photograph ``name`` that ``split`` crops from: the first 60 % along its
    longer side for train, the rest for test."""
    _check_split(split)
    h, w = _photo(name).shape[:2]
    if h >= w:
        cut = int(round(_TRAIN_FRACTION_PHOTO * h))
        return (slice(0, cut) if split == "train" else slice(cut, h)), slice(0, w)
    cut = int(round(_TRAIN_FRACTION_PHOTO * w))
    return slice(0, h), (slice(0, cut) if split == "train" else slice(cut, w))


@functools.cache
def _background_levels(split: str) -> tuple[tuple[np.ndarray, bool, int], ...]:
    """(image (H, W, C), is texture, photograph index): the split's region of each photograph
    at each scale that fits a 96x96 crop."""
    levels = []
    for photo, (name, is_texture) in enumerate(BACKGROUNDS):
        rows, cols = photo_region(name, split)
        region = _photo(name)[rows, cols]
        for f in _LEVELS:
            oh, ow = int(round(region.shape[0] * f)), int(round(region.shape[1] * f))
            if min(oh, ow) < SCENE_SIZE:
                continue
            level = region
            if f != 1.0:
                level = _apply_taps(level, *_area_taps(region.shape[0], oh), axis=0)
                level = _apply_taps(level, *_area_taps(region.shape[1], ow), axis=1)
            levels.append((np.ascontiguousarray(level, dtype=np.float32), is_texture, photo))
    return tuple(levels)


@functools.cache
def _level_groups(split: str) -> tuple[tuple[int, ...], ...]:
    """Indices of :func:`_background_levels` grouped by photograph."""
    groups: dict[int, list[int]] = {}
    for li, (_, _, photo) in enumerate(_background_levels(split)):
        groups.setdefault(photo, []).append(li)
    return tuple(tuple(g) for g in groups.values())


@functools.cache
def _digit_taps(size: int) -> tuple[np.ndarray, np.ndarray]:
    return _keys_taps(8, size, pad=2)


def _render_digits(images: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Alpha masks and halos (N, size + 2*HALO, size + 2*HALO) of 8x8 digits at side ``size``."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    idx, w = _digit_taps(size)
    up = _apply_taps(_apply_taps(padded, idx, w, axis=1), idx, w, axis=2)
    # A steep ramp: stroke cores become opaque, the faint fringe of the 8x8 counts disappears.
    alpha = np.clip((up - 0.15) * 2.5, 0.0, 1.0)
    alpha = np.pad(alpha, ((0, 0), (HALO, HALO), (HALO, HALO)))
    halo = alpha
    for _ in range(HALO):  # HALO passes of a separable 3x3 max filter
        p = np.pad(halo, ((0, 0), (0, 0), (1, 1)))
        halo = np.maximum(np.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
        p = np.pad(halo, ((0, 0), (1, 1), (0, 0)))
        halo = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return alpha.astype(np.float32), halo.astype(np.float32)
