"""MS-COCO 2014 as a multi-label data set: 80 labels, an image's label positive when it holds an
instance of that category, read from ``annotations/instances_{train,val}2014.json`` and the
``train2014/``, ``val2014/`` image folders.

Splits as ML-GCN and the showing-many study use them: ``train2014`` for training and ``val2014``
as the test set. Label order: COCO's category ids ascending (ML-GCN's ``category.json`` gives the
same order); a ``category.json`` of another order ({name: index}) can be passed. Every image of
the annotation file is an example (one without instances has no positive label). Parsing the
train annotations takes tens of seconds and gigabytes, so the label matrix is cached in a small
``.npz`` keyed by the annotation file's size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, InvalidInputError
from .base import FileListDataset
from .images import load_tensor

#: The 80 categories in COCO's id order (ids 1..90 with gaps).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
SPLITS = ("val2014", "train2014")
_CACHE_VERSION = 1
#: Largest annotation file accepted (COCO 2014's train file is about 330 MB).
MAX_JSON_BYTES = 2 << 30


def read_category_order(path: str | os.PathLike) -> tuple[str, ...]:
    """Label names in the order of a ML-GCN ``category.json`` ({name: index}, indices 0..l-1)."""
    p = Path(path).expanduser()
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: no such category file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{p}: not a readable JSON category file ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise DataError(f"{p}: JSON nested too deeply to be a category file ({{name: index}})") from None
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, int) for k, v in obj.items()):
        raise DataError(f"{p}: expected {{category name: index}}, as ML-GCN's category.json")
    if sorted(obj.values()) != list(range(len(obj))):
        raise DataError(f"{p}: the indices must be 0..{len(obj) - 1}, each once")
    return tuple(name for name, _ in sorted(obj.items(), key=lambda kv: kv[1]))


class COCODataset(FileListDataset):
    """One split of MS-COCO 2014 (the :class:`~mlalp_core.data.base.MultiLabelDataset` protocol)."""

    def __init__(self, root: str | os.PathLike, split: str = "val2014", categories: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None | bool = None) -> None:
        if split not in SPLITS:
            raise InvalidInputError(f"COCO 2014 split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root = Path(root).expanduser().absolute()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder (expected the COCO folder with annotations/ and {split}/)")
        self.split = split
        self.name = f"coco2014-{split}"
        self.annotation_file = self.root / "annotations" / f"instances_{split}.json"
        self.image_dir = self.root / split
        if not self.annotation_file.is_file():
            raise DataError(f"{self.annotation_file}: missing annotation file (COCO 2014's annotations/)")
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: missing image folder")
        self._order = read_category_order(categories) if categories else None
        self._cache_dir = cache_dir
        self.label_names, self._files, self._labels = self._read()

    # ---- the protocol ------------------------------------------------------------------------
    def image_path(self, index: int) -> Path:
        return self.image_dir / self._files[index]

    def image(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        path = self.image_path(index)
        if not path.is_file():
            raise DataError(f"{path}: missing image")
        try:
            return load_tensor(path, size, name=str(path))
        except InvalidInputError as exc:
            raise DataError(str(exc)) from exc

    # ---- reading -----------------------------------------------------------------------------
    def _read(self) -> tuple[tuple[str, ...], list[str], np.ndarray]:
        st = self.annotation_file.stat()
        if st.st_size > MAX_JSON_BYTES:
            raise DataError(f"{self.annotation_file}: {st.st_size} bytes; the limit is {MAX_JSON_BYTES}")
        key = f"v{_CACHE_VERSION}:{self.split}:{st.st_size}:{st.st_mtime_ns}:{self._order}"
        cache = _cache_path(self._cache_dir, "coco", self.annotation_file, self.split)
        if cache is not None and cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    if str(z["key"]) == key:
                        return tuple(str(n) for n in z["names"]), [str(f) for f in z["files"]], z["labels"].astype(bool)
            except (OSError, ValueError, KeyError):
                pass
        names, files, labels = self._parse()
        if cache is not None:
            _write_cache(cache, key=np.array(key), names=np.array(names), files=np.array(files), labels=labels)
        return names, files, labels

    def _parse(self) -> tuple[tuple[str, ...], list[str], np.ndarray]:
        p = self.annotation_file
        try:
            with open(p, "rb") as fh:
                obj = json.load(fh)
        except ValueError as exc:
            raise DataError(f"{p}: not valid JSON ({str(exc).splitlines()[0]})") from None
        except OSError as exc:
            raise DataError(f"{p}: cannot be read ({exc.strerror or exc})") from None
        except RecursionError:
            raise DataError(f"{p}: JSON nested too deeply to be a COCO instances file (images, annotations and "
                            "categories lists)") from None
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
            raise DataError(f"{p}: not a COCO instances file (needs images, annotations and categories lists)")
        try:
            cats = sorted((int(c["id"]), str(c["name"])) for c in obj["categories"])
            images = [(int(im["id"]), str(im["file_name"])) for im in obj["images"]]
            anns = [(int(a["image_id"]), int(a["category_id"])) for a in obj["annotations"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{p}: a malformed image, annotation or category entry ({exc!r})") from None
        names = tuple(n for _, n in cats)
        if self._order is not None:
            if sorted(self._order) != sorted(names):
                missing = sorted(set(names) ^ set(self._order))[:3]
                raise DataError(f"the category file does not list the same categories as {p} (e.g. {missing})")
            names = self._order
        col = {cid: names.index(n) for cid, n in cats}
        row = {iid: k for k, (iid, _) in enumerate(images)}
        labels = np.zeros((len(images), len(names)), dtype=bool)
        for iid, cid in anns:
            if iid not in row:
                raise DataError(f"{p}: an annotation refers to image id {iid}, which the file does not list")
            if cid not in col:
                raise DataError(f"{p}: an annotation refers to category id {cid}, which the file does not list")
            labels[row[iid], col[cid]] = True
        for _, f in images:
            if "/" in f or "\\" in f or f.startswith("."):
                raise DataError(f"{p}: image file name {f!r} must be a plain file name")
        return names, [f for _, f in images], labels


def _cache_path(cache_dir: str | os.PathLike | None | bool, kind: str, source: Path, split: str) -> Path | None:
    if cache_dir is False:
        return None
    if cache_dir in (None, True):
        from ..settings import default_cache_dir

        base = default_cache_dir()
    else:
        base = Path(cache_dir).expanduser()  # type: ignore[arg-type]
    folder = hashlib.sha256(str(source.parent).encode()).hexdigest()[:16]
    return base / kind / folder / f"{kind}-{split}.npz"


def _write_cache(cache: Path, **arrays: np.ndarray) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache location costs speed, not correctness
