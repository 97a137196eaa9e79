"""The VOCdevkit reader on a miniature VOCdevkit written by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlalp_core.data import voc
from mlalp_core.data.base import MultiLabelDataset
from mlalp_core.data.voc import VOC_CLASSES, VOCDataset, find_years, paper_split
from mlalp_core.errors import DataError

# id -> (PIL mode, size (W, H), file format, objects [(class, difficult)])
MINI = {
    "000001": ("RGB", (50, 40), "JPEG", [("dog", 0), ("person", 0), ("person", 1)]),
    "000002": ("L", (33, 47), "JPEG", [("cat", 0), ("chair", 1)]),
    "000003": ("P", (40, 40), "PNG", [("car", 0), ("bus", 0), ("person", 0)]),
    "000004": ("CMYK", (64, 30), "JPEG", [("bird", 1), ("aeroplane", 0)]),
    "000005": ("RGBA", (20, 20), "PNG", [("sofa", 0), ("tvmonitor", 0), ("dog", 1)]),
    "000006": ("RGB", (45, 45), "JPEG", [("horse", 0), ("person", 0)]),
}
SPLITS = {
    "train": ["000001", "000002", "000003", "000006", "000005"],
    "val": ["000004", "000005"],
    "test": ["000004", "000005", "000006"],
}


def annotation_xml(image_id: str, size: tuple[int, int], objects: list[tuple[str, int]]) -> str:
    """A VOC-format annotation (the real files' layout, bounding boxes included)."""
    objs = "".join(
        f"""
	<object>
		<name>{name}</name>
		<pose>Unspecified</pose>
		<truncated>0</truncated>
		<difficult>{diff}</difficult>
		<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>{size[0] - 1}</xmax><ymax>{size[1] - 1}</ymax></bndbox>
	</object>"""
        for name, diff in objects
    )
    return f"""<annotation>
	<folder>VOC2007</folder>
	<filename>{image_id}.jpg</filename>
	<source><database>The VOC2007 Database</database></source>
	<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>
	<segmented>0</segmented>{objs}
</annotation>
"""


def make_image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode == "RGB":
        return rgb
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "RGBA":
        img = rgb.convert("RGBA")
        alpha = np.full((size[1], size[0]), 255, dtype=np.uint8)
        alpha[:, : size[0] // 2] = 0  # left half fully transparent
        img.putalpha(Image.fromarray(alpha, "L"))
        return img
    return rgb.convert(mode)


def make_voc(base: Path, years: tuple[int, ...] = (2007,), layout: str = "devkit") -> Path:
    """A miniature VOCdevkit under ``base``; returns the folder to give the reader.

    layout: "devkit" (base/VOCdevkit/VOC20XX, returns base/VOCdevkit), "parent" (returns base),
    "year" (returns the VOC20XX folder itself).
    """
    devkit = base / "VOCdevkit"
    for year in years:
        root = devkit / f"VOC{year}"
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for k, (image_id, (mode, size, fmt, objects)) in enumerate(MINI.items()):
            # Every image is named .jpg, as in VOC; the PNG ones test content-based decoding.
            make_image(mode, size, k).save(root / "JPEGImages" / f"{image_id}.jpg", format=fmt)
            (root / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, size, objects))
        for split, ids in SPLITS.items():
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    if layout == "devkit":
        return devkit
    if layout == "parent":
        return base
    return devkit / f"VOC{years[0]}"


def expected(ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.zeros(len(ids), len(VOC_CLASSES), dtype=torch.bool)
    dif = torch.zeros_like(pos)
    for r, i in enumerate(ids):
        for name, d in MINI[i][3]:
            j = VOC_CLASSES.index(name)
            if d == 0:
                pos[r, j] = True
        for name, d in MINI[i][3]:
            j = VOC_CLASSES.index(name)
            if d == 1 and not pos[r, j]:
                dif[r, j] = True
    return pos, dif


@pytest.fixture
def vocroot(tmp_path: Path) -> Path:
    return make_voc(tmp_path / "data")


def test_labels_from_annotations_difficult_negative(vocroot: Path, tmp_path: Path) -> None:
    ds = VOCDataset(vocroot, 2007, "train", cache_dir=tmp_path / "cache")
    assert isinstance(ds, MultiLabelDataset)
    assert ds.name == "voc2007-train" and len(ds) == 5 and ds.ids() == SPLITS["train"]
    assert ds.label_names == VOC_CLASSES and len(VOC_CLASSES) == 20
    pos, dif = expected(SPLITS["train"])
    assert torch.equal(ds.labels(), pos)
    assert ds.valid().all()  # difficult objects simply count as negative
    # 000001: person has a plain and a difficult object -> positive; 000002: chair only difficult -> negative
    assert ds.labels()[0, VOC_CLASSES.index("person")]
    assert not ds.labels()[1, VOC_CLASSES.index("chair")]
    assert torch.equal(ds.difficult_only(), dif)


def test_difficult_ignore_marks_only_difficult_labels_invalid(vocroot: Path, tmp_path: Path) -> None:
    ds = VOCDataset(vocroot, 2007, "train", difficult="ignore", cache_dir=tmp_path / "cache")
    pos, dif = expected(SPLITS["train"])
    assert torch.equal(ds.labels(), pos)
    assert torch.equal(ds.valid(), ~dif)
    assert not ds.valid()[1, VOC_CLASSES.index("chair")]
    assert ds.valid()[0, VOC_CLASSES.index("person")]  # a plain object outweighs a difficult one
    assert (~ds.valid()).sum() == 2  # chair in 000002, dog in 000005


def test_images_of_every_mode_load_as_rgb_in_unit_range(vocroot: Path, tmp_path: Path) -> None:
    ds = VOCDataset(vocroot, 2007, "train", cache_dir=False)
    for i in range(len(ds)):
        for size in ((448, 448), (299, 299), (17, 23)):
            x = ds.image(i, size)
            assert x.shape == (3, *size) and x.dtype == torch.float32
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # 000002 is grayscale: its channels are equal
    g = ds.image(1, (20, 20))
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    # 000005 is RGBA (stored as PNG in a .jpg file) with a transparent left half: composited on white
    rgba = ds.image(SPLITS["train"].index("000005"), (20, 20))
    assert torch.all(rgba[:, :, :8] == 1.0)
    assert float(rgba[:, :, 12:].mean()) < 0.9


def test_label_cache_is_used_and_invalidated(vocroot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = VOCDataset(vocroot, 2007, "train", cache_dir=cache)
    files = list(cache.rglob("*.npz"))
    assert len(files) == 1 and files[0].name == "voc2007-train.npz"

    calls = []
    real = voc.parse_annotation
    monkeypatch.setattr(voc, "parse_annotation", lambda p, *a: calls.append(p) or real(p, *a))
    again = VOCDataset(vocroot, 2007, "train", cache_dir=cache)
    assert calls == [] and torch.equal(again.labels(), first.labels())
    # the other difficult mode is served by the same cache (it holds both raw matrices)
    ign = VOCDataset(vocroot, 2007, "train", difficult="ignore", cache_dir=cache)
    assert calls == [] and (~ign.valid()).sum() == 2

    # edit one annotation: the cache must not be used for it
    xml = vocroot / "VOC2007" / "Annotations" / "000002.xml"
    xml.write_text(annotation_xml("000002", (33, 47), [("cow", 0)]))
    st = xml.stat()
    os.utime(xml, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    edited = VOCDataset(vocroot, 2007, "train", cache_dir=cache)
    assert len(calls) == 5
    row = edited.labels()[1]
    assert row[VOC_CLASSES.index("cow")] and not row[VOC_CLASSES.index("cat")]

    # a damaged cache file is rebuilt, not trusted
    files[0].write_bytes(b"not an npz")
    assert torch.equal(VOCDataset(vocroot, 2007, "train", cache_dir=cache).labels(), edited.labels())


def test_root_layouts_and_years(tmp_path: Path) -> None:
    parent = make_voc(tmp_path / "a", years=(2007, 2012), layout="parent")
    assert sorted(find_years(parent)) == [2007, 2012]
    assert len(VOCDataset(parent, 2012, "val", cache_dir=False)) == 2
    year_folder = make_voc(tmp_path / "b", layout="year")
    ds = VOCDataset(year_folder, 2007, "test", cache_dir=False)
    assert len(ds) == 3
    with pytest.raises(DataError, match="holds VOC2007, not VOC2012"):
        VOCDataset(make_voc(tmp_path / "c"), 2012, "val", cache_dir=False)


def test_not_a_vocdevkit_folder(tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        VOCDataset(other, 2007, "test")
    msg = str(err.value)
    assert "is not a VOCdevkit folder: expected VOC2007/ or VOC2012/ with JPEGImages/, Annotations/, ImageSets/Main/" in msg
    assert str(other) in msg and "\n" not in msg
    with pytest.raises(DataError, match="no such folder"):
        VOCDataset(tmp_path / "missing", 2007, "test")


def test_missing_pieces_name_the_file(vocroot: Path) -> None:
    main = vocroot / "VOC2007" / "ImageSets" / "Main"
    with pytest.raises(DataError, match=r"trainval\.txt: missing split file"):
        VOCDataset(vocroot, 2007, "trainval", cache_dir=False)
    (vocroot / "VOC2007" / "Annotations" / "000006.xml").unlink()
    with pytest.raises(DataError, match=r"000006\.xml: missing annotation file"):
        VOCDataset(vocroot, 2007, "test", cache_dir=False)
    ds = VOCDataset(vocroot, 2007, "val", cache_dir=False)
    (vocroot / "VOC2007" / "JPEGImages" / "000004.jpg").unlink()
    with pytest.raises(DataError, match=r"000004\.jpg: missing image"):
        ds.image(0, (8, 8))
    (vocroot / "VOC2007" / "JPEGImages" / "000005.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match=r"000005\.jpg"):
        ds.image(1, (8, 8))
    (main / "val.txt").write_text("000004 extra words\n")
    with pytest.raises(DataError, match=r"val\.txt:1"):
        VOCDataset(vocroot, 2007, "val", cache_dir=False)
    import shutil

    shutil.rmtree(vocroot / "VOC2007" / "Annotations")
    with pytest.raises(DataError, match=r"Annotations: missing folder"):
        VOCDataset(vocroot, 2007, "val", cache_dir=False)


@pytest.mark.parametrize(
    "content, match",
    [
        ("<annotation><object><name>dog</name>", "malformed XML"),
        ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><annotation/>', "DOCTYPE/ENTITY"),
        ("<annotation><object><name>unicorn</name></object></annotation>", "unknown object class 'unicorn'"),
        ("<annotation><object><name>dog</name><difficult>2</difficult></object></annotation>", "<difficult>"),
        ("<html></html>", "not a VOC annotation"),
    ],
)
def test_bad_annotations_are_refused(vocroot: Path, content: str, match: str) -> None:
    xml = vocroot / "VOC2007" / "Annotations" / "000004.xml"
    xml.write_text(content)
    with pytest.raises(DataError, match=match) as err:
        VOCDataset(vocroot, 2007, "val", cache_dir=False)
    assert str(xml) in str(err.value) and "\n" not in str(err.value)


def test_huge_annotation_is_refused(vocroot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voc, "MAX_XML_BYTES", 100)
    with pytest.raises(DataError, match="the limit is 100"):
        VOCDataset(vocroot, 2007, "val", cache_dir=False)


def test_paper_split_is_seeded_disjoint_and_complete(vocroot: Path) -> None:
    ds = VOCDataset(vocroot, 2007, "train", cache_dir=False)
    a, b = paper_split(ds)
    a2, b2 = paper_split(ds)
    assert (len(a), len(b)) == (4, 1)
    assert a.ids() == a2.ids() and b.ids() == b2.ids()
    assert sorted(a.ids() + b.ids()) == sorted(ds.ids())
    assert a.name == "voc2007-train80" and b.name == "voc2007-train20"
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(123)).tolist()
    assert a.ids() == [ds.ids()[i] for i in perm[:4]]
    j = ds.ids().index(b.ids()[0])
    assert torch.equal(b.labels()[0], ds.labels()[j])
    assert torch.equal(b.image(0, (10, 10)), ds.image(j, (10, 10)))
