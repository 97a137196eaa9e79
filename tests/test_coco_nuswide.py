"""MS-COCO 2014 and NUS-WIDE readers on miniature copies the tests write (never downloads), with
the VOC reader's guarantees; ML-GCN's COCO checkpoint layout (80 labels) through check-model."""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlalp_core.cli import main as cli_main
from mlalp_core.data.coco import COCO_CLASSES, COCODataset
from mlalp_core.data.nuswide import NUSWIDEDataset
from mlalp_core.errors import DataError


def _img(path: Path, seed: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def make_coco(base: Path) -> Path:
    """Three val2014 images: person+dog, car, none (ids with gaps, as COCO's)."""
    cats = [{"id": i + 1 + (i >= 11) + (i >= 24) * 2, "name": n} for i, n in enumerate(COCO_CLASSES)]
    ids = {c["name"]: c["id"] for c in cats}
    images = [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"},
              {"id": 73, "file_name": "COCO_val2014_000000000073.jpg"},
              {"id": 74, "file_name": "COCO_val2014_000000000074.jpg"}]
    anns = [{"id": 1, "image_id": 42, "category_id": ids["person"]}, {"id": 2, "image_id": 42,
            "category_id": ids["dog"]}, {"id": 3, "image_id": 42, "category_id": ids["person"]},
            {"id": 4, "image_id": 73, "category_id": ids["car"]}]
    (base / "annotations").mkdir(parents=True)
    (base / "annotations" / "instances_val2014.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats}))
    for k, im in enumerate(images):
        _img(base / "val2014" / im["file_name"], k)
    return base


def test_coco_labels_split_and_cache(tmp_path):
    root = make_coco(tmp_path / "coco")
    ds = COCODataset(root, "val2014", cache_dir=tmp_path / "cache")
    assert len(ds) == 3 and ds.label_names == COCO_CLASSES and ds.name == "coco2014-val2014"
    y = ds.labels()
    assert y[0, COCO_CLASSES.index("person")] and y[0, COCO_CLASSES.index("dog")] and int(y[0].sum()) == 2
    assert int(y[1].sum()) == 1 and int(y[2].sum()) == 0
    assert ds.ids()[0] == "COCO_val2014_000000000042"
    img = ds.image(0, (16, 16))
    assert img.shape == (3, 16, 16) and 0 <= float(img.min()) and float(img.max()) <= 1
    cached = list((tmp_path / "cache").rglob("*.npz"))
    assert len(cached) == 1
    again = COCODataset(root, "val2014", cache_dir=tmp_path / "cache")
    assert torch.equal(again.labels(), y)
    # ML-GCN's category.json may order the labels differently
    order = {n: i for i, n in enumerate(reversed(COCO_CLASSES))}
    (tmp_path / "category.json").write_text(json.dumps(order))
    rev = COCODataset(root, "val2014", categories=tmp_path / "category.json", cache_dir=False)
    assert rev.label_names[0] == "toothbrush" and torch.equal(rev.labels(), y.flip(1))


@pytest.mark.parametrize("damage, words", [
    (lambda r: (r / "annotations" / "instances_val2014.json").unlink(), "instances_val2014.json: missing annotation file"),
    (lambda r: (r / "annotations" / "instances_val2014.json").write_text("{not json"), "not valid JSON"),
    (lambda r: (r / "annotations" / "instances_val2014.json").write_text('{"images": []}'), "not a COCO instances file"),
    (lambda r: _drop_category(r), "refers to category id"),
    (lambda r: (r / "val2014" / "COCO_val2014_000000000042.jpg").write_bytes(b"garbage"), "000042.jpg"),
])
def test_coco_bad_files_are_one_line_naming_the_file(tmp_path, damage, words):
    root = make_coco(tmp_path / "coco")
    damage(root)
    with pytest.raises(DataError, match=words) as info:
        COCODataset(root, "val2014", cache_dir=False).image(0, (8, 8))
    assert "\n" not in str(info.value)


def _drop_category(root: Path) -> None:
    p = root / "annotations" / "instances_val2014.json"
    obj = json.loads(p.read_text())
    obj["categories"] = [c for c in obj["categories"] if c["name"] != "dog"]
    p.write_text(json.dumps(obj))


def make_nuswide(base: Path, n_test: int = 4) -> Path:
    concepts = [f"concept{j:02d}" for j in range(81)]
    (base / "ImageList").mkdir(parents=True)
    (base / "Groundtruth" / "TrainTestLabels").mkdir(parents=True)
    (base / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    files = [f"actor\\{k:04d}_12345.jpg" for k in range(n_test)]
    (base / "ImageList" / "TestImagelist.txt").write_text("\r\n".join(files) + "\r\n")
    (base / "ImageList" / "TrainImagelist.txt").write_text("actor\\9999_1.jpg\n")
    rng = np.random.default_rng(0)
    labels = rng.random((n_test, 81)) < 0.1
    for j, c in enumerate(concepts):
        (base / "Groundtruth" / "TrainTestLabels" / f"Labels_{c}_Test.txt").write_text(
            "\n".join("1" if v else "0" for v in labels[:, j]) + "\n")
        (base / "Groundtruth" / "TrainTestLabels" / f"Labels_{c}_Train.txt").write_text("0\n")
    for k in range(n_test - 1):  # the last image is missing, as many are
        _img(base / "Flickr" / "actor" / f"{k:04d}_12345.jpg", k)
    np.save(base / "expected.npy", labels)
    return base


def test_nuswide_labels_split_missing_images(tmp_path):
    root = make_nuswide(tmp_path / "nus")
    ds = NUSWIDEDataset(root, "test", cache_dir=tmp_path / "cache")
    assert len(ds) == 4 and len(ds.label_names) == 81
    assert torch.equal(ds.labels(), torch.from_numpy(np.load(root / "expected.npy")))
    assert ds.image(0, (8, 8)).shape == (3, 8, 8)
    with pytest.raises(DataError, match="0003_12345.jpg: missing image"):
        ds.image(3, (8, 8))
    present = NUSWIDEDataset(root, "test", available_only=True, cache_dir=tmp_path / "cache")
    assert len(present) == 3 and present.ids()[-1] == "0002_12345"
    assert len(NUSWIDEDataset(root, "train", cache_dir=False)) == 1


@pytest.mark.parametrize("damage, words", [
    (lambda r: (r / "Concepts81.txt").write_text("a\nb\n"), "expected 81 distinct concept names"),
    (lambda r: (r / "Groundtruth" / "TrainTestLabels" / "Labels_concept05_Test.txt").write_text("0\n1\n"),
     "Labels_concept05_Test.txt: 2 labels for the 4 images"),
    (lambda r: (r / "Groundtruth" / "TrainTestLabels" / "Labels_concept05_Test.txt").write_text("0\n1\n2\n0\n"),
     r"Labels_concept05_Test.txt:3: expected 0 or 1"),
    (lambda r: (r / "ImageList" / "TestImagelist.txt").write_text("..\\..\\etc\\passwd\n"), "must stay inside Flickr"),
    (lambda r: (r / "ImageList" / "TestImagelist.txt").unlink(), "TestImagelist.txt: missing"),
])
def test_nuswide_bad_files_are_one_line_naming_the_file(tmp_path, damage, words):
    root = make_nuswide(tmp_path / "nus")
    damage(root)
    with pytest.raises(DataError, match=words):
        NUSWIDEDataset(root, "test", cache_dir=False)


def test_datasets_are_listed_and_loaded_through_the_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLALP_COCO_ROOT", str(make_coco(tmp_path / "coco")))
    monkeypatch.setenv("MLALP_NUSWIDE_ROOT", str(make_nuswide(tmp_path / "nus")))
    monkeypatch.setenv("MLALP_CACHE_DIR", str(tmp_path / "cache"))
    assert cli_main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "coco2014   available" in out and "nuswide    available" in out
    from mlalp_core.data.registry import load_dataset

    assert len(load_dataset("coco2014")) == 3 and len(load_dataset("nuswide")) == 3  # present images only


def test_mlgcn_coco_checkpoint_is_recognised_by_check_model(tmp_path, capsys):
    """ML-GCN's COCO layout: coco_checkpoint.pth.tar (80 labels, legacy serialisation, no
    num_batches_tracked), coco_glove_word2vec.pkl (80 x 300), coco_adj.pkl."""
    from mlalp_core.models import ml_gcn
    from mlalp_core.models.gcn import cooccurrence_adjacency

    rng = np.random.default_rng(0)
    wv = rng.standard_normal((80, 300)).astype(np.float32)
    adj = rng.integers(0, 60, (80, 80)).astype(np.int64)
    np.fill_diagonal(adj, 0)
    counts = {"adj": adj, "nums": rng.integers(60, 120, 80).astype(np.int64)}
    with open(tmp_path / "coco_glove_word2vec.pkl", "wb") as fh:
        pickle.dump(wv, fh)
    with open(tmp_path / "coco_adj.pkl", "wb") as fh:
        pickle.dump(counts, fh, protocol=2)
    torch.manual_seed(0)
    model = ml_gcn.MLGCN(wv, cooccurrence_adjacency(counts["adj"], counts["nums"]), COCO_CLASSES).eval()
    state = OrderedDict((k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    torch.save({"epoch": np.int64(5), "arch": "resnet101", "state_dict": state, "best_score": np.float64(83.0)},
               tmp_path / "coco_checkpoint.pth.tar", _use_new_zipfile_serialization=False)
    loaded = ml_gcn.load_ml_gcn(tmp_path / "coco_checkpoint.pth.tar", tmp_path / "coco_glove_word2vec.pkl",
                                tmp_path / "coco_adj.pkl")
    assert loaded.label_names == COCO_CLASSES and loaded.label_set == "MS-COCO" and loaded.adjacency_matches
    rc = cli_main(["check-model", "ml-gcn", "--checkpoint", str(tmp_path / "coco_checkpoint.pth.tar"),
                   "--word-vectors", str(tmp_path / "coco_glove_word2vec.pkl"), "--adjacency",
                   str(tmp_path / "coco_adj.pkl"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "labels (80)" in out and "person" in out and "MS-COCO's label set" in out
    # VOC word vectors (20 x 300) with a COCO checkpoint: one line naming the file
    with open(tmp_path / "voc_glove_word2vec.pkl", "wb") as fh:
        pickle.dump(wv[:20], fh)
    rc = cli_main(["check-model", "ml-gcn", "--checkpoint", str(tmp_path / "coco_checkpoint.pth.tar"),
                   "--word-vectors", str(tmp_path / "voc_glove_word2vec.pkl"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "voc_glove_word2vec.pkl" in err and "80" in err and len(err.strip().splitlines()) == 1
    assert os.path.getsize(tmp_path / "coco_checkpoint.pth.tar") > 0
