"""The bundled demo: multi-label scenes of coloured handwritten digits on real photographs.

Why it exists: the app and the tests need a multi-label task that runs offline on a CPU in
seconds, yet has what the paper's VOC setting has: natural backgrounds, several objects per
image, and label co-occurrence for a label-graph model (ML-GCN) to exploit.

A scene is RGB 3x96x96 in [0,1] (d = 27,648). Its objects are 2 to 4 handwritten digits of
*distinct* classes (labels are the classes present, 10 labels ``DEMO_LABELS``), taken from
scikit-learn's digits set (1,797 8x8 images, 16 grey levels, from the UCI "Optical Recognition
of Handwritten Digits" data). Each digit is upscaled with bicubic interpolation to a random size
of 20..34 px, drawn in its own saturated colour through its intensity as an alpha mask, with a
thin dark halo so that it stays legible on any background. Boxes overlap by at most 8 % of the
smaller one. Backgrounds are random crops (random scale, random horizontal flip) of photographs
that ship inside scikit-image's wheel (PNG only: four colour photographs and three CC0 texture
photographs, the latter tinted), dimmed and partly desaturated.

Label co-occurrence (what ``demo-gcn``'s graph can learn). The number of digits k is 2, 3 or 4
with probabilities 0.35 / 0.40 / 0.25. Classes are added one at a time: a class is drawn
uniformly among the unused ones; with probability 0.8 its *companions* follow it (in random
order, while fewer than k digits are chosen). The companion groups are

    {one, seven}    {three, eight}    {zero, six, nine}

and two, four, five have none. Measured on 50,000 label sets: P(seven | one) = P(one | seven) =
P(eight | three) = 0.77, P(j | i) = 0.66..0.67 within the triple, while each label's base rate
is 0.19 (no companions) to 0.38 (the triple) and P(j | i) across groups is 0.11 to 0.26.
At ML-GCN's threshold 0.4 the graph holds exactly the companion edges
(checked in ``tests/test_demo_data.py``).

Held-out means held out: the digit instances are split per class by a fixed permutation (70 %
train, 30 % test) and each photograph is cut in two along its longer side (first 60 % train,
last 40 % test), so train and test scenes share neither a digit instance nor a background pixel.

Determinism: scene i of (seed, split) comes from its own PCG64 stream keyed by (seed, split, i),
so it does not depend on n, and every pixel operation is elementwise IEEE arithmetic (+, -, *, /,
min, max, floor: no BLAS, no pow or other transcendental functions, whose results may depend on
the CPU), so the same inputs give bit-identical uint8 scenes on any machine with the same
scikit-learn and scikit-image data files.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, InvalidInputError

DEMO_LABELS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Scene side in pixels.
SCENE_SIZE = 96
SPLITS = ("train", "test")
#: Classes that tend to appear together (indices into DEMO_LABELS).
COMPANION_GROUPS: tuple[tuple[int, ...], ...] = ((1, 7), (3, 8), (0, 6, 9))
#: Probability that a drawn class brings its companions.
COMPANION_PROB = 0.8
#: P(k = 2, 3, 4 digits).
OBJECT_COUNT_PROBS = (0.35, 0.40, 0.25)
DIGIT_SIZES = (20, 34)  # inclusive range of the digit box side, px
MAX_OVERLAP = 0.08  # box intersection / smaller box area
HALO = 2  # px of dark halo around each digit
#: Version of the generating process: bump it when scenes change, and regenerate the gallery.
GENERATOR_VERSION = 1

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

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
GALLERY_DIR = ASSETS_DIR / "demo" / "gallery"


# ---------------------------------------------------------------------------------------------
# Deterministic resampling (elementwise only, so results do not depend on the CPU or BLAS)
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Sources: digits and photographs, split once per process
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Scene sampling
# ---------------------------------------------------------------------------------------------
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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}")


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


# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------
def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].clamp_(0, 1)


class _TensorScenes:
    """A MultiLabelDataset over uint8 images held in memory."""

    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str]) -> None:
        self.name = name
        self.label_names = DEMO_LABELS
        self._images = images
        self._labels = labels
        self._ids = list(ids)

    def __len__(self) -> int:
        return self._images.shape[0]

    def ids(self) -> list[str]:
        return list(self._ids)

    def labels(self) -> torch.Tensor:
        return self._labels.clone()

    def valid(self) -> torch.Tensor:
        return torch.ones_like(self._labels)

    def image(self, index: int, size: tuple[int, int] = (SCENE_SIZE, SCENE_SIZE)) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise InvalidInputError(f"{self.name}: index {index} is out of range 0..{len(self) - 1}")
        return _resize(self._images[index].float().div_(255.0), size)

    def images(self, size: tuple[int, int] = (SCENE_SIZE, SCENE_SIZE)) -> torch.Tensor:
        """All images (N, 3, H, W) float in [0,1]."""
        x = self._images.float().div_(255.0)
        if tuple(size) != (SCENE_SIZE, SCENE_SIZE):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        return x


class DemoScenes(_TensorScenes):
    """Generated scenes (n, seed, split), named ``demo-<split>``; ids are ``<split>-<seed>-<i>``."""

    def __init__(self, n: int, seed: int, split: str = "test") -> None:
        images, labels = generate_scenes(n, seed, split)
        super().__init__(f"demo-{split}", images, labels, [f"{split}-{seed}-{i:05d}" for i in range(n)])
        self.seed, self.split = seed, split


class DemoGallery(_TensorScenes):
    """The committed gallery (``assets/demo/gallery``), named ``demo``; ids are the file stems."""


GALLERY_MANIFEST = "manifest.json"
GALLERY_LABELS = "labels.csv"


def read_gallery_labels(folder: Path) -> list[tuple[str, str, list[str]]]:
    """Rows (id, file, label names) of a gallery's labels.csv."""
    path = Path(folder) / GALLERY_LABELS
    if not path.is_file():
        raise DataError(f"{path} is missing: run `mlalp make-gallery` to regenerate the demo gallery")
    rows = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"id", "file", "labels"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns id,file,labels, got {reader.fieldnames}")
        for row in reader:
            names = row["labels"].split()
            unknown = [n for n in names if n not in DEMO_LABELS]
            if unknown:
                raise DataError(f"{path}: scene {row['id']} has unknown labels {unknown}")
            rows.append((row["id"], row["file"], names))
    return rows


def load_gallery(folder: str | Path | None = None) -> DemoGallery:
    """The demo gallery, read once per folder and cached in memory (it is ~1 MB)."""
    return _load_gallery_cached(str(Path(folder) if folder is not None else GALLERY_DIR))


@functools.cache
def _load_gallery_cached(folder: str) -> DemoGallery:
    from .images import load_image

    root = Path(folder)
    rows = read_gallery_labels(root)
    if not rows:
        raise DataError(f"{root / GALLERY_LABELS} lists no scenes: run `mlalp make-gallery`")
    images = torch.empty((len(rows), 3, SCENE_SIZE, SCENE_SIZE), dtype=torch.uint8)
    labels = torch.zeros((len(rows), len(DEMO_LABELS)), dtype=torch.bool)
    for i, (_, file, names) in enumerate(rows):
        path = root / file
        if not path.is_file():
            raise DataError(f"{path} is missing: run `mlalp make-gallery` to regenerate the demo gallery")
        img = np.asarray(load_image(path))
        if img.shape != (SCENE_SIZE, SCENE_SIZE, 3):
            raise DataError(f"{path} is {img.shape[1]}x{img.shape[0]}, expected {SCENE_SIZE}x{SCENE_SIZE}")
        images[i] = torch.from_numpy(img.copy()).permute(2, 0, 1)
        labels[i, [DEMO_LABELS.index(n) for n in names]] = True
    images.requires_grad_(False)
    return DemoGallery("demo", images, labels, [r[0] for r in rows])


def gallery_manifest(folder: str | Path | None = None) -> dict:
    """How the gallery was made (seed, split, count, generator version)."""
    path = Path(folder if folder is not None else GALLERY_DIR) / GALLERY_MANIFEST
    if not path.is_file():
        raise DataError(f"{path} is missing: run `mlalp make-gallery` to regenerate the demo gallery")
    return json.loads(path.read_text())


#: Seed of the committed gallery (test split); evaluation scenes use other seeds.
GALLERY_SEED = 7


def make_gallery(folder: str | Path | None = None, n: int = 64, seed: int = GALLERY_SEED) -> Path:
    """Write n test scenes as scene_XXX.png plus labels.csv and manifest.json; returns the folder."""
    from PIL import Image

    if n < 1:
        raise InvalidInputError(f"the gallery needs at least one scene, got n={n}")
    root = Path(folder) if folder is not None else GALLERY_DIR
    root.mkdir(parents=True, exist_ok=True)
    images, labels = generate_scenes(n, seed, "test")
    width = max(3, len(str(n - 1)))
    rows = []
    for i in range(n):
        sid = f"scene_{i:0{width}d}"
        Image.fromarray(images[i].permute(1, 2, 0).numpy(), "RGB").save(root / f"{sid}.png", optimize=True)
        rows.append((sid, f"{sid}.png", " ".join(DEMO_LABELS[j] for j in labels[i].nonzero().flatten().tolist())))
    with (root / GALLERY_LABELS).open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "file", "labels"])
        writer.writerows(rows)
    manifest = {"seed": seed, "split": "test", "n": n, "generator_version": GENERATOR_VERSION,
                "size": [SCENE_SIZE, SCENE_SIZE], "labels": list(DEMO_LABELS)}
    (root / GALLERY_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _load_gallery_cached.cache_clear()
    return root
