"""Data sets by name: the bundled demo, generated held-out demo scenes, VOC2007 and VOC2012.

VOC splits: 2007 has train, val, trainval, test (default test, the paper's test set); 2012 has
train, val (default val, the paper's test set) and the paper's seeded 80/20 split of train,
``train80`` (training) and ``train20`` (model selection).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigurationError, DataError
from ..settings import Settings, load_settings
from .base import MultiLabelDataset
from .voc import DifficultMode, VOCDataset, find_years, paper_split

#: Held-out demo scenes: how many and from which seed (the demo models' evaluation seed).
DEMO_TEST_N = 500
DEMO_TEST_SEED = 1001


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    splits: tuple[str, ...]
    default_split: str
    available: bool
    reason: str = ""


VOC_SPLITS_BY_YEAR: dict[int, tuple[tuple[str, ...], str]] = {
    2007: (("test", "train", "val", "trainval"), "test"),
    2012: (("val", "train", "train80", "train20"), "val"),
}


def _voc_info(year: int, s: Settings) -> DatasetInfo:
    splits, default = VOC_SPLITS_BY_YEAR[year]
    name = f"voc{year}"
    desc = f"PASCAL VOC{year} ({', '.join(splits)}; default {default})"
    if s.voc_root is None:
        return DatasetInfo(name, desc, splits, default, False, f"{name}: set MLALP_VOC_ROOT (the VOCdevkit folder)")
    try:
        years = find_years(s.voc_root)
    except DataError as exc:
        return DatasetInfo(name, desc, splits, default, False, f"{name}: {exc}")
    if year not in years and 0 not in years:
        have = ", ".join(f"VOC{y}" for y in sorted(years)) or "no VOC year"
        return DatasetInfo(name, desc, splits, default, False, f"{name}: {s.voc_root} holds {have}, not VOC{year}")
    return DatasetInfo(name, desc, splits, default, True)


def list_datasets(settings: Settings | None = None) -> list[DatasetInfo]:
    s = settings or load_settings()
    out = [
        DatasetInfo("demo", "the bundled demo gallery (digits on photographs, 96x96)", ("gallery",), "gallery", True),
        DatasetInfo("demo-test", f"{DEMO_TEST_N} generated held-out demo scenes (seed {DEMO_TEST_SEED})",
                    ("test",), "test", True),
    ]
    try:
        from .demo import GALLERY_DIR, GALLERY_LABELS
    except ImportError as exc:
        out = [DatasetInfo(i.name, i.description, i.splits, i.default_split, False, f"{i.name}: {exc}") for i in out]
    else:
        if not (GALLERY_DIR / GALLERY_LABELS).is_file():
            g = out[0]
            out[0] = DatasetInfo(g.name, g.description, g.splits, g.default_split, False,
                                 f"demo: {GALLERY_DIR / GALLERY_LABELS} is missing: run `mlalp make-gallery`")
    return out + [_voc_info(2007, s), _voc_info(2012, s), _folder_info(
        "coco2014", "MS-COCO 2014, 80 labels (val2014 as the test split, as ML-GCN; train2014)", ("val2014", "train2014"),
        s.coco_root, "MLALP_COCO_ROOT", "the COCO folder with annotations/, train2014/, val2014/",
        lambda r: (r / "annotations").is_dir()), _folder_info(
        "nuswide", "NUS-WIDE, 81 concepts (official test/train split)", ("test", "train"), s.nuswide_root,
        "MLALP_NUSWIDE_ROOT", "the NUS-WIDE folder with Concepts81.txt, ImageList/, Groundtruth/, Flickr/",
        lambda r: (r / "Concepts81.txt").is_file())]


def _folder_info(name: str, desc: str, splits: tuple[str, ...], root: Path | None, env: str, what: str,
                 looks_right: Any) -> DatasetInfo:
    if root is None:
        return DatasetInfo(name, desc, splits, splits[0], False, f"{name}: set {env} ({what})")
    if not root.is_dir() or not looks_right(root):
        return DatasetInfo(name, desc, splits, splits[0], False, f"{name}: {env} names {root}, which is not {what}")
    return DatasetInfo(name, desc, splits, splits[0], True)


def load_dataset(
    name: str,
    split: str | None = None,
    settings: Settings | None = None,
    difficult: DifficultMode = "negative",
) -> MultiLabelDataset:
    """The data set ``name`` (split ``split`` or its default)."""
    s = settings or load_settings()
    infos = {i.name: i for i in list_datasets(s)}
    if name not in infos:
        raise ConfigurationError(f"unknown data set {name!r}; known: {', '.join(infos)}")
    info = infos[name]
    if not info.available:
        raise ConfigurationError(info.reason)
    split = split or info.default_split
    if split not in info.splits:
        raise ConfigurationError(f"{name} has no split {split!r}; choose one of {', '.join(info.splits)}")
    if name == "demo":
        from .demo import load_gallery

        return load_gallery()
    if name == "demo-test":
        from .demo import DemoScenes

        return DemoScenes(DEMO_TEST_N, DEMO_TEST_SEED, "test")
    if name == "coco2014":
        from .coco import COCODataset

        return COCODataset(s.coco_root, split, categories=s.coco_categories, cache_dir=s.cache_dir)  # type: ignore[arg-type]
    if name == "nuswide":
        from .nuswide import NUSWIDEDataset

        return NUSWIDEDataset(s.nuswide_root, split, available_only=True, cache_dir=s.cache_dir)  # type: ignore[arg-type]
    year = int(name[3:])
    if split in ("train80", "train20"):
        train = VOCDataset(s.voc_root, year, "train", difficult=difficult, cache_dir=s.cache_dir)
        fit, select = paper_split(train)
        return fit if split == "train80" else select
    return VOCDataset(s.voc_root, year, split, difficult=difficult, cache_dir=s.cache_dir)


@dataclass(frozen=True)
class FoundImage:
    """One image to attack, at a model's input size, with where it came from."""

    x: torch.Tensor  # (3, H, W) in [0,1]
    name: str  # a file stem or the data set's example id
    labels: torch.Tensor | None  # (l,) bool ground truth; None for a file
    index: int  # the position in the data set (hide-one's seed uses it); 0 for a file
    original_size: tuple[int, int] | None = None  # (H, W) of a file before resizing
    label_names: tuple[str, ...] | None = None  # the data set's labels; None for a file
    notes: tuple[str, ...] = ()  # what loading did to a file (open_image): flattened, one frame, stretched


def find_image(spec: str, size: tuple[int, int], dataset: str = "demo", split: str | None = None,
               settings: Settings | None = None) -> FoundImage:
    """``spec`` as a user writes it: an image file, an example id of ``dataset`` (``scene_005``)
    or its index (``5``). Files go through the safe image loader (size limits) and are resized."""
    from .images import open_image, pil_to_tensor

    path = Path(spec).expanduser()
    if path.is_file():
        img, notes = open_image(path, size=size)
        return FoundImage(pil_to_tensor(img, size), path.stem, None, 0, (img.height, img.width), notes=tuple(notes))
    ds = load_dataset(dataset, split, settings=settings)
    ids = ds.ids()
    if spec in ids:
        index = ids.index(spec)
    elif spec.strip().isdigit() and int(spec) < len(ds):
        index = int(spec)
    else:
        near = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        raise DataError(f"{spec!r} is not an image file, nor an example id or index of {dataset} "
                        f"({len(ds)} examples: {near})")
    return FoundImage(ds.image(index, size), ids[index], ds.labels()[index].bool(), index,
                      label_names=tuple(ds.label_names))
