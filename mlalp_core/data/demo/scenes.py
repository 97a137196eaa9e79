"""Demo scenes: each scene's label set, digits and background drawn from its own random stream,
then rendered in chunks (uint8 images, bool labels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import InvalidInputError
from .resampling import _hsv_to_rgb
from .sources import _background_levels, _class_members, _digits, _level_groups, _render_digits
from .task import (
    COMPANION_GROUPS,
    COMPANION_PROB,
    DEMO_LABELS,
    DIGIT_SIZES,
    GENERATOR_VERSION,
    HALO,
    MAX_OVERLAP,
    OBJECT_COUNT_PROBS,
    SCENE_SIZE,
    SPLITS,
    _check_split,
)


@dataclass(frozen=True)
class SceneObject:
    """One digit of a scene: its class, which digit instance, where, how big, what colour."""

    label: int
    digit_index: int  # index into sklearn's load_digits()
    size: int
    top: int
    left: int
    color: tuple[float, float, float]


@dataclass(frozen=True)
class _SceneSpec:
    objects: tuple[SceneObject, ...]
    level: int
    crop_top: int
    crop_left: int
    flip: bool
    tint: tuple[float, float, float]
    contrast: float
    brightness: float
    grey_mix: float


_GROUP_OF = {c: g for g in COMPANION_GROUPS for c in g}


def sample_label_set(rng: np.random.Generator) -> list[int]:
    """Classes of one scene (2..4, distinct) following the companion process of the docstring."""
    k = int(rng.choice(3, p=OBJECT_COUNT_PROBS)) + 2
    chosen: list[int] = []
    while len(chosen) < k:
        free = [c for c in range(len(DEMO_LABELS)) if c not in chosen]
        c = free[int(rng.integers(len(free)))]
        chosen.append(c)
        if c in _GROUP_OF and rng.random() < COMPANION_PROB:
            companions = [m for m in _GROUP_OF[c] if m != c and m not in chosen]
            for m in rng.permutation(companions).tolist() if companions else []:
                if len(chosen) < k:
                    chosen.append(int(m))
    return chosen


def _overlap_ok(top: int, left: int, size: int, placed: list[SceneObject]) -> bool:
    for o in placed:
        dy = min(top + size, o.top + o.size) - max(top, o.top)
        dx = min(left + size, o.left + o.size) - max(left, o.left)
        if dy > 0 and dx > 0 and dy * dx > MAX_OVERLAP * min(size, o.size) ** 2:
            return False
    return True


def _sample_scene(seed: int, split: str, index: int) -> _SceneSpec:
    rng = np.random.Generator(np.random.PCG64([int(seed), SPLITS.index(split), int(index), GENERATOR_VERSION]))
    classes = sample_label_set(rng)
    members = _class_members(split)
    hue0 = rng.random()
    objects: list[SceneObject] = []
    for j, c in enumerate(classes):
        digit = int(members[c][int(rng.integers(members[c].size))])
        size = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
        while True:
            for _ in range(200):
                top = int(rng.integers(SCENE_SIZE - size + 1))
                left = int(rng.integers(SCENE_SIZE - size + 1))
                if _overlap_ok(top, left, size, objects):
                    break
            else:
                if size > DIGIT_SIZES[0]:
                    size = max(DIGIT_SIZES[0], size - 2)
                    continue
                raise RuntimeError("cannot place the digits of a demo scene")  # pragma: no cover
            break
        hue = hue0 + (j + 0.6 * rng.random() - 0.3) / len(classes)
        color = _hsv_to_rgb(hue, 0.65 + 0.35 * rng.random(), 1.0)
        objects.append(SceneObject(c, digit, size, top, left, tuple(float(v) for v in color)))
    # Each photograph is equally likely, whatever its number of levels.
    groups = _level_groups(split)
    group = groups[int(rng.integers(len(groups)))]
    level = group[int(rng.integers(len(group)))]
    lh, lw = _background_levels(split)[level][0].shape[:2]
    crop_top = int(rng.integers(lh - SCENE_SIZE + 1))
    crop_left = int(rng.integers(lw - SCENE_SIZE + 1))
    flip = bool(rng.random() < 0.5)
    tint = tuple(float(v) for v in _hsv_to_rgb(rng.random(), 0.45, 1.0))
    contrast = 0.45 + 0.25 * rng.random()
    brightness = 0.12 + 0.18 * rng.random()
    grey_mix = 0.2 + 0.4 * rng.random()
    return _SceneSpec(tuple(objects), level, crop_top, crop_left, flip, tint, contrast, brightness, grey_mix)


def _render(specs: Sequence[_SceneSpec], split: str) -> np.ndarray:
    """uint8 scenes (n, 3, 96, 96) from their specifications."""
    n = len(specs)
    digits, _ = _digits()
    levels = _background_levels(split)
    # Render every digit of the batch, grouped by size (vectorised).
    wanted: dict[int, list[tuple[int, int]]] = {}
    for si, spec in enumerate(specs):
        for oi, o in enumerate(spec.objects):
            wanted.setdefault(o.size, []).append((si, oi))
    sprites: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for size, keys in wanted.items():
        imgs = np.stack([digits[specs[si].objects[oi].digit_index] for si, oi in keys])
        alpha, halo = _render_digits(imgs, size)
        for k, key in enumerate(keys):
            sprites[key] = (alpha[k], halo[k])

    out = np.empty((n, 3, SCENE_SIZE, SCENE_SIZE), dtype=np.uint8)
    pad = HALO
    canvas = np.empty((SCENE_SIZE + 2 * pad, SCENE_SIZE + 2 * pad, 3), dtype=np.float32)
    for si, spec in enumerate(specs):
        level, is_texture, _ = levels[spec.level]
        bg = level[spec.crop_top : spec.crop_top + SCENE_SIZE, spec.crop_left : spec.crop_left + SCENE_SIZE]
        if spec.flip:
            bg = bg[:, ::-1]
        # Written out (not mean()) so that the summation order is fixed on every CPU.
        grey = (bg[:, :, 0:1] + bg[:, :, 1:2] + bg[:, :, 2:3]) / 3.0 if bg.shape[2] == 3 else bg
        if is_texture:
            bg = grey * np.asarray(spec.tint, dtype=np.float32)
        else:
            bg = (1 - spec.grey_mix) * bg + spec.grey_mix * grey
        canvas.fill(0.0)
        canvas[pad:-pad, pad:-pad] = spec.brightness + spec.contrast * bg
        for oi, o in enumerate(spec.objects):
            alpha, halo = sprites[(si, oi)]
            # The sprite is the digit box grown by the halo on each side; canvas is padded alike.
            region = canvas[o.top : o.top + o.size + 2 * pad, o.left : o.left + o.size + 2 * pad]
            region *= 1.0 - 0.75 * halo[:, :, None]
            region += alpha[:, :, None] * (np.asarray(o.color, dtype=np.float32) - region)
        img = np.clip(canvas[pad:-pad, pad:-pad], 0.0, 1.0)
        out[si] = np.floor(img * 255.0 + 0.5).astype(np.uint8).transpose(2, 0, 1)
    return out


def scene_objects(n: int, seed: int, split: str = "train", start: int = 0) -> list[tuple[SceneObject, ...]]:
    """The digits of scenes start..start+n-1 (what :func:`generate_scenes` draws), for checks."""
    _check_split(split)
    return [_sample_scene(seed, split, i).objects for i in range(start, start + n)]


def generate_scenes(
    n: int, seed: int, split: str = "train", start: int = 0, chunk: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes start..start+n-1 of (seed, split): uint8 images (n, 3, 96, 96), bool labels (n, 10).

    Divide the images by 255 for [0,1] floats. Scene i depends only on (seed, split, i).
    """
    _check_split(split)
    if n < 0 or start < 0:
        raise InvalidInputError(f"n and start must be non-negative, got n={n}, start={start}")
    images = torch.empty((n, 3, SCENE_SIZE, SCENE_SIZE), dtype=torch.uint8)
    labels = torch.zeros((n, len(DEMO_LABELS)), dtype=torch.bool)
    for lo in range(0, n, chunk):
        specs = [_sample_scene(seed, split, start + i) for i in range(lo, min(n, lo + chunk))]
        images[lo : lo + len(specs)] = torch.from_numpy(_render(specs, split))
        for k, spec in enumerate(specs):
            labels[lo + k, [o.label for o in spec.objects]] = True
    return images, labels


def cooccurrence_counts(labels: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ML-GCN's statistics of a label matrix (N, l): pair counts (zero diagonal) and label counts."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if y.ndim != 2:
        raise InvalidInputError(f"labels must be (N, l), got shape {y.shape}")
    y = (y > 0).astype(np.int64)
    counts = y.T @ y
    np.fill_diagonal(counts, 0)
    return counts.astype(np.int64), y.sum(0).astype(np.int64)
