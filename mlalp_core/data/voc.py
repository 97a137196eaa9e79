"""PASCAL VOC 2007/2012 classification splits read from a VOCdevkit folder.

Labels come from the XML annotations: label j is positive when the image holds an object of
class j that is not marked 'difficult'. Objects marked difficult count as negative by default
(the paper's convention, REFERENCE.md); ``difficult="ignore"`` marks a label whose only objects
are difficult as not valid (``valid()`` False), as ML-GCN's evaluation and ML-LIW's loss treat
VOC's "0" labels. (ML-GCN's *training* loss counted those labels as positive; the training
command reproduces that from ``labels() | ~valid()``.)

Reading 5000 XML files takes seconds, so the raw facts (positive and difficult-only matrices,
both difficult modes derive from them) are cached in a small ``.npz`` in the cache directory,
keyed by the split file's and every annotation file's size and modification time: an edited
annotation or split file invalidates the cache, never a stale label.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET
import numpy as np
import torch

from ..errors import DataError, InvalidInputError
from .images import load_tensor

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
DifficultMode = Literal["negative", "ignore"]

#: Largest annotation file accepted (VOC's are a few kB).
MAX_XML_BYTES = 1 << 20
#: Bump when the cache layout changes.
_CACHE_VERSION = 1
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_YEAR_DIR = re.compile(r"VOC(\d{4})$", re.IGNORECASE)
_SUBDIRS = ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main"))


def _not_voc(root: Path) -> DataError:
    return DataError(
        f"{root} is not a VOCdevkit folder: expected VOC2007/ or VOC2012/ with JPEGImages/, "
        "Annotations/, ImageSets/Main/"
    )


def _looks_like_year_dir(p: Path) -> bool:
    return any((p / s).is_dir() for s in _SUBDIRS)


def find_years(root: str | os.PathLike) -> dict[int, Path]:
    """The VOC year folders under ``root``: a VOCdevkit folder, its parent, or one VOC20XX
    folder itself. Raises :class:`DataError` when there is none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected a VOCdevkit folder)")
    if _looks_like_year_dir(root):
        m = _YEAR_DIR.match(root.name)
        return {int(m.group(1)) if m else 0: root}
    found: dict[int, Path] = {}
    for base in (root, root / "VOCdevkit"):
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            m = _YEAR_DIR.match(child.name)
            if m and child.is_dir() and _looks_like_year_dir(child):
                found.setdefault(int(m.group(1)), child)
        if found:
            return found
    raise _not_voc(root)


def year_dir(root: str | os.PathLike, year: int) -> Path:
    """The VOC``year`` folder, with every expected sub-folder checked."""
    years = find_years(root)
    if year in years:
        path = years[year]
    elif 0 in years:  # a year folder whose name does not say which year: trust the caller
        path = years[0]
    else:
        have = ", ".join(f"VOC{y}" for y in sorted(years))
        raise DataError(f"{Path(root)} holds {have}, not VOC{year}")
    for sub in _SUBDIRS:
        if not (path / sub).is_dir():
            raise DataError(f"{path / sub}: missing folder (a VOC{year} folder needs JPEGImages/, Annotations/, ImageSets/Main/)")
    return path


def read_split(path: Path) -> list[str]:
    """Image ids of a split file (one id per line, as in ImageSets/Main/train.txt)."""
    if not path.is_file():
        raise DataError(f"{path}: missing split file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    ids = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 1 or "/" in parts[0] or "\\" in parts[0] or parts[0].startswith("."):
            raise DataError(f"{path}:{lineno}: expected one image id per line, got {line.strip()!r}")
        ids.append(parts[0])
    if not ids:
        raise DataError(f"{path}: the split file lists no image")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: an image id is listed twice")
    return ids


#: "<!DOCTYPE" and "<!ENTITY" in every encoding an XML file may use (each ASCII letter is one unit
#: of 1, 2 or 4 bytes there, so ``bytes.upper()`` folds their case in all of them).
_DECLARATIONS = tuple(word.encode(enc) for word in ("<!DOCTYPE", "<!ENTITY")
                      for enc in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


def _refuse_declarations(raw: bytes, path: Path) -> None:
    """The second line of defence: any DOCTYPE/ENTITY declaration, in any encoding, is refused
    before a parser sees the file (VOC annotations never have one)."""
    upper = raw.upper()
    if any(word in upper for word in _DECLARATIONS):
        raise DataError(f"{path}: annotation contains a DOCTYPE/ENTITY declaration; refused (VOC annotations are "
                        "plain XML: remove the declaration)")


def _parse_xml(raw: bytes, path: Path) -> Element:
    """XML parsed by defusedxml, made for hostile input: a DOCTYPE, an entity (internal or external)
    or an external reference is refused, in every encoding the parser reads, never expanded."""
    try:
        return SafeET.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise DataError(f"{path}: annotation contains a DOCTYPE/ENTITY declaration or an external reference "
                        f"({type(exc).__name__}); refused (VOC annotations are plain XML)") from None
    except (ParseError, ValueError, LookupError) as exc:  # ValueError/LookupError: an encoding expat lacks
        raise DataError(f"{path}: malformed XML ({exc}); VOC annotations are UTF-8 XML") from None


def parse_annotation(path: Path, label_names: Sequence[str] = VOC_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """(positive, difficult_only) bool vectors of one VOC XML annotation.

    Only plain XML is accepted: files over :data:`MAX_XML_BYTES` are refused unread; a DOCTYPE or
    ENTITY declaration is refused twice over, by a byte scan in every encoding and by defusedxml's
    parser (no entity is ever expanded).
    """
    try:
        size = path.stat().st_size
        if size > MAX_XML_BYTES:
            raise DataError(f"{path}: annotation is {size} bytes; the limit is {MAX_XML_BYTES}")
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing annotation file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    _refuse_declarations(raw, path)
    root = _parse_xml(raw, path)
    if root.tag != "annotation":
        raise DataError(f"{path}: not a VOC annotation (root element <{root.tag}>)")
    index = {n: j for j, n in enumerate(label_names)}
    plain = np.zeros(len(label_names), dtype=bool)
    difficult = np.zeros(len(label_names), dtype=bool)
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise DataError(f"{path}: unknown object class {name!r}")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise DataError(f"{path}: <difficult> must be 0 or 1, got {flag!r}")
        (difficult if flag == "1" else plain)[index[name]] = True
    return plain, difficult & ~plain


def _stat_key(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p.name}\0missing\n".encode())
    return h.hexdigest()


class VOCDataset:
    """One split of one VOC year, meeting the :class:`~mlalp_core.data.base.MultiLabelDataset`
    protocol.

    Parameters
    ----------
    root: a VOCdevkit folder (or its parent, or the VOC20XX folder itself).
    year: 2007 or 2012 (any year folder present works).
    split: train, val, trainval or test (any ImageSets/Main/<split>.txt present works).
    difficult: "negative" (default) or "ignore" (see the module docstring).
    cache_dir: where the label cache goes; None uses ``~/.cache/mlalp``; False disables it.
    """

    label_names: tuple[str, ...] = VOC_CLASSES

    def __init__(
        self,
        root: str | os.PathLike,
        year: int = 2007,
        split: str = "test",
        difficult: DifficultMode = "negative",
        cache_dir: str | os.PathLike | None | bool = None,
    ) -> None:
        if difficult not in ("negative", "ignore"):
            raise InvalidInputError(f"difficult must be 'negative' or 'ignore', got {difficult!r}")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", str(split)):
            raise InvalidInputError(f"invalid split name {split!r}")
        self.root = Path(root).expanduser().absolute()
        self.year = int(year)
        self.split = str(split)
        self.difficult = difficult
        self.dir = year_dir(self.root, self.year)
        self.name = f"voc{self.year}-{self.split}"
        self._ids = read_split(self.dir / "ImageSets" / "Main" / f"{self.split}.txt")
        self._cache_dir = cache_dir
        positive, difficult_only = self._read_labels()
        self._positive = torch.from_numpy(positive)
        self._difficult_only = torch.from_numpy(difficult_only)

    # ---- the protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        return list(self._ids)

    def labels(self) -> torch.Tensor:
        return self._positive.clone()

    def valid(self) -> torch.Tensor:
        if self.difficult == "ignore":
            return ~self._difficult_only
        return torch.ones_like(self._positive)

    def difficult_only(self) -> torch.Tensor:
        """(N, l) bool: labels whose objects in the image are all marked difficult."""
        return self._difficult_only.clone()

    def image(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        path = self.image_path(index)
        try:
            return load_tensor(path, size, name=str(path))
        except InvalidInputError as exc:
            raise DataError(str(exc)) from exc

    # ---- files -------------------------------------------------------------------------------
    def annotation_path(self, index: int) -> Path:
        return self.dir / "Annotations" / f"{self._ids[index]}.xml"

    def image_path(self, index: int) -> Path:
        stem = self.dir / "JPEGImages" / self._ids[index]
        for suffix in _IMAGE_SUFFIXES:
            p = stem.with_name(stem.name + suffix)
            if p.is_file():
                return p
        raise DataError(f"{stem.with_name(stem.name + '.jpg')}: missing image")

    def subset(self, indices: Sequence[int], split_name: str) -> VOCSubset:
        return VOCSubset(self, indices, split_name)

    # ---- label cache -------------------------------------------------------------------------
    def _cache_file(self) -> Path | None:
        if self._cache_dir is False:
            return None
        base = Path(self._cache_dir).expanduser() if self._cache_dir not in (None, True) else None
        if base is None:
            from ..settings import default_cache_dir

            base = default_cache_dir()
        folder = hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]
        return base / "voc" / folder / f"voc{self.year}-{self.split}.npz"

    def _read_labels(self) -> tuple[np.ndarray, np.ndarray]:
        ann = [self.annotation_path(k) for k in range(len(self._ids))]
        split_file = self.dir / "ImageSets" / "Main" / f"{self.split}.txt"
        key = f"v{_CACHE_VERSION}:{self.year}:{self.split}:{_stat_key([split_file, *ann])}"
        cache = self._cache_file()
        if cache is not None and cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    if str(z["key"]) == key and z["positive"].shape == (len(ann), len(VOC_CLASSES)):
                        return z["positive"].astype(bool), z["difficult_only"].astype(bool)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt
        rows = [parse_annotation(p) for p in ann]
        positive = np.stack([r[0] for r in rows])
        difficult_only = np.stack([r[1] for r in rows])
        if cache is not None:
            self._write_cache(cache, key, positive, difficult_only)
        return positive, difficult_only

    @staticmethod
    def _write_cache(cache: Path, key: str, positive: np.ndarray, difficult_only: np.ndarray) -> None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, key=np.array(key), positive=positive, difficult_only=difficult_only)
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only cache location costs speed, not correctness


class VOCSubset:
    """A fixed selection of a :class:`VOCDataset`'s examples (e.g. the paper's 80/20 split)."""

    label_names: tuple[str, ...] = VOC_CLASSES

    def __init__(self, base: VOCDataset, indices: Sequence[int], split_name: str) -> None:
        n = len(base)
        idx = [int(i) for i in indices]
        if any(not 0 <= i < n for i in idx):
            raise InvalidInputError(f"subset indices must lie in 0..{n - 1}")
        self.base = base
        self.indices = idx
        self.split = split_name
        self.name = f"voc{base.year}-{split_name}"
        self._sel = torch.tensor(idx, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def ids(self) -> list[str]:
        all_ids = self.base.ids()
        return [all_ids[i] for i in self.indices]

    def labels(self) -> torch.Tensor:
        return self.base.labels()[self._sel]

    def valid(self) -> torch.Tensor:
        return self.base.valid()[self._sel]

    def difficult_only(self) -> torch.Tensor:
        return self.base.difficult_only()[self._sel]

    def image(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        return self.base.image(self.indices[index], size)

    def image_path(self, index: int) -> Path:
        return self.base.image_path(self.indices[index])


def paper_split(ds: VOCDataset, seed: int = 123, fraction: float = 0.8) -> tuple[VOCSubset, VOCSubset]:
    """The paper's random 80/20 split of VOC2012 train into a training and a validation part.

    The authors' ML-LIW script seeds torch with 123 and calls ``random_split``, which draws
    ``randperm(n)`` from that generator; this draws the same permutation from a private
    generator (same ids in the same order as theirs, as long as torch's randperm is unchanged).
    """
    n = len(ds)
    n_train = int(fraction * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return ds.subset(perm[:n_train], "train80"), ds.subset(perm[n_train:], "train20")
