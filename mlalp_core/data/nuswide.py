"""NUS-WIDE as a multi-label data set: the 81 concepts of its ground truth, on the official
train/test split, from the files of its distribution:

- ``Concepts81.txt``: the 81 concept names, one per line (the label order);
- ``ImageList/TrainImagelist.txt`` and ``ImageList/TestImagelist.txt``: one image path per line,
  relative to ``Flickr/`` (Windows separators, as distributed: ``actor\\0001_2124494179.jpg``);
- ``Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt``: one 0/1 per image, in the
  order of the image list;
- the images under ``Flickr/``.

Many NUS-WIDE images are no longer obtainable; ``available_only=True`` keeps only the examples
whose image file is present (as the showing-many study attacks the images it has), otherwise a
missing image is a one-line error when it is read. The label matrix is cached like VOC's.
"""

from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath

import numpy as np
import torch

from ..errors import DataError, InvalidInputError
from .base import FileListDataset
from .coco import _cache_path, _write_cache
from .images import load_tensor

SPLITS = ("test", "train")
_CACHE_VERSION = 1


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: missing {what}")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as text ({exc})") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


class NUSWIDEDataset(FileListDataset):
    """One split of NUS-WIDE's 81-concept ground truth (the MultiLabelDataset protocol)."""

    def __init__(self, root: str | os.PathLike, split: str = "test", available_only: bool = False,
                 cache_dir: str | os.PathLike | None | bool = None) -> None:
        if split not in SPLITS:
            raise InvalidInputError(f"NUS-WIDE split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root = Path(root).expanduser().absolute()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder (expected the NUS-WIDE folder with Concepts81.txt, "
                            "ImageList/, Groundtruth/ and Flickr/)")
        self.split = split
        self.name = f"nuswide-{split}"
        self.label_names = tuple(_read_lines(self.root / "Concepts81.txt", "concept list (Concepts81.txt)"))
        if len(self.label_names) != 81 or len(set(self.label_names)) != 81:
            raise DataError(f"{self.root / 'Concepts81.txt'}: expected 81 distinct concept names, got "
                            f"{len(self.label_names)}")
        part = "Train" if split == "train" else "Test"
        self._list_file = self.root / "ImageList" / f"{part}Imagelist.txt"
        self._label_files = [self.root / "Groundtruth" / "TrainTestLabels" / f"Labels_{c}_{part}.txt"
                             for c in self.label_names]
        self._cache_dir = cache_dir
        files, labels = self._read()
        self._files, self._labels = files, labels
        if available_only:
            keep = [k for k, f in enumerate(files) if (self.root / "Flickr" / f).is_file()]
            self._files = [files[k] for k in keep]
            self._labels = labels[keep]

    def image_path(self, index: int) -> Path:
        return self.root / "Flickr" / self._files[index]

    def image(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        path = self.image_path(index)
        if not path.is_file():
            raise DataError(f"{path}: missing image (NUS-WIDE images are often unobtainable; "
                            "available_only=True keeps the ones present)")
        try:
            return load_tensor(path, size, name=str(path))
        except InvalidInputError as exc:
            raise DataError(str(exc)) from exc

    def _read(self) -> tuple[list[str], np.ndarray]:
        sources = [self._list_file, *self._label_files]
        stamp = []
        for p in sources:
            try:
                s = p.stat()
                stamp.append(f"{p.name}:{s.st_size}:{s.st_mtime_ns}")
            except OSError:
                raise DataError(f"{p}: missing {'image list' if p == self._list_file else 'label file'}") from None
        key = f"v{_CACHE_VERSION}:{self.split}:" + "|".join(stamp)
        cache = _cache_path(self._cache_dir, "nuswide", self._list_file, self.split)
        if cache is not None and cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    if str(z["key"]) == key:
                        return [str(f) for f in z["files"]], z["labels"].astype(bool)
            except (OSError, ValueError, KeyError):
                pass
        files = []
        for lineno, line in enumerate(_read_lines(self._list_file, "image list"), 1):
            rel = Path(*PureWindowsPath(line.replace("/", "\\")).parts)
            if rel.is_absolute() or ".." in rel.parts:
                raise DataError(f"{self._list_file}:{lineno}: image path {line!r} must stay inside Flickr/")
            files.append(rel.as_posix())
        labels = np.zeros((len(files), len(self.label_names)), dtype=bool)
        for j, path in enumerate(self._label_files):
            values = _read_lines(path, "label file")
            if len(values) != len(files):
                raise DataError(f"{path}: {len(values)} labels for the {len(files)} images of {self._list_file.name}")
            bad = next((k for k, v in enumerate(values) if v not in ("0", "1")), None)
            if bad is not None:
                raise DataError(f"{path}:{bad + 1}: expected 0 or 1, got {values[bad]!r}")
            labels[:, j] = np.array(values) == "1"
        if cache is not None:
            _write_cache(cache, key=np.array(key), files=np.array(files), labels=labels)
        return files, labels
