"""The demo as data sets: generated scenes in memory, and the committed gallery of
``assets/demo/gallery`` (read once and cached, described by its manifest, regenerated)."""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DataError, InvalidInputError
from .scenes import generate_scenes
from .task import DEMO_LABELS, GENERATOR_VERSION, SCENE_SIZE

ASSETS_DIR = Path(__file__).resolve().parents[3] / "assets"
GALLERY_DIR = ASSETS_DIR / "demo" / "gallery"


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
    from ..images import load_image

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
