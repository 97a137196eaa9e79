"""The demo scene generator, its splits and label structure, and the committed gallery."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from mlalp_core.data import demo
from mlalp_core.data.base import MultiLabelDataset
from mlalp_core.data.demo import (
    COMPANION_GROUPS,
    DEMO_LABELS,
    DemoScenes,
    cooccurrence_counts,
    digit_split,
    gallery_manifest,
    generate_scenes,
    load_gallery,
    scene_objects,
    sources,
)
from mlalp_core.errors import DataError, InvalidInputError
from mlalp_core.models.gcn import cooccurrence_adjacency


def test_same_seed_same_bytes_and_scene_i_independent_of_n():
    a_img, a_lab = generate_scenes(6, seed=3, split="train")
    b_img, b_lab = generate_scenes(6, seed=3, split="train")
    assert a_img.dtype == torch.uint8 and a_img.shape == (6, 3, 96, 96)
    assert a_lab.dtype == torch.bool and a_lab.shape == (6, 10)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    tail_img, tail_lab = generate_scenes(3, seed=3, split="train", start=3)
    assert torch.equal(tail_img, a_img[3:]) and torch.equal(tail_lab, a_lab[3:])


def test_different_seed_or_split_differs():
    a, _ = generate_scenes(4, seed=3, split="train")
    b, _ = generate_scenes(4, seed=4, split="train")
    c, _ = generate_scenes(4, seed=3, split="test")
    assert not torch.equal(a, b)
    assert not torch.equal(a, c)
    # Every scene differs, not just one.
    assert all(not torch.equal(a[i], b[i]) for i in range(4))


def test_labels_are_the_drawn_digits_and_each_is_visible():
    n, seed = 12, 5
    images, labels = generate_scenes(n, seed, "test")
    objects = scene_objects(n, seed, "test")
    digits, target = sources._digits()
    for i, objs in enumerate(objects):
        assert 2 <= len(objs) <= 4
        classes = [o.label for o in objs]
        assert len(set(classes)) == len(classes)  # distinct classes
        assert set(torch.nonzero(labels[i]).flatten().tolist()) == set(classes)
        img = images[i].permute(1, 2, 0).numpy().astype(np.float64) / 255.0
        for k, o in enumerate(objs):
            assert target[o.digit_index] == o.label  # the instance really is that digit
            alpha, _ = sources._render_digits(digits[o.digit_index][None], o.size)
            core = alpha[0, demo.HALO:-demo.HALO, demo.HALO:-demo.HALO] == 1.0  # fully opaque strokes
            # Pixels of later objects (with their halos) may cover this one: exclude them.
            free = np.ones((96, 96), bool)
            for later in objs[k + 1 :]:
                t, l, s = later.top - demo.HALO, later.left - demo.HALO, later.size + 2 * demo.HALO
                free[max(t, 0) : t + s, max(l, 0) : l + s] = False
            patch = img[o.top : o.top + o.size, o.left : o.left + o.size]
            mask = core & free[o.top : o.top + o.size, o.left : o.left + o.size]
            assert mask.sum() > 0.5 * core.sum(), "a digit is mostly hidden"
            match = np.abs(patch[mask] - np.asarray(o.color)).max(axis=1) <= 1.01 / 255
            assert match.mean() > 0.99  # its opaque strokes are drawn in its colour


def test_train_and_test_use_disjoint_digit_instances():
    train, test = set(digit_split("train").tolist()), set(digit_split("test").tolist())
    assert not train & test
    assert len(train) + len(test) == 1797
    assert 0.65 < len(train) / 1797 < 0.75
    used = {o.digit_index for objs in scene_objects(200, 0, "test") for o in objs}
    assert used <= test
    used = {o.digit_index for objs in scene_objects(200, 0, "train") for o in objs}
    assert used <= train


def test_train_and_test_backgrounds_come_from_disjoint_regions():
    for name, _ in demo.BACKGROUNDS:
        h, w = sources._photo(name).shape[:2]
        tr, te = demo.photo_region(name, "train"), demo.photo_region(name, "test")
        cells = [set(range(*r.indices(h))) for r in (tr[0], te[0])], [set(range(*c.indices(w))) for c in (tr[1], te[1])]
        rows_disjoint = not cells[0][0] & cells[0][1]
        cols_disjoint = not cells[1][0] & cells[1][1]
        assert rows_disjoint or cols_disjoint
        # Together they cover the photograph.
        assert len(cells[0][0] | cells[0][1]) == h and len(cells[1][0] | cells[1][1]) == w
    # Every photograph offers at least one crop scale to each split.
    for split in demo.SPLITS:
        assert {p for _, _, p in sources._background_levels(split)} == set(range(len(demo.BACKGROUNDS)))


def test_companion_labels_cooccur_well_above_the_base_rate():
    objs = scene_objects(3000, 11, "train")
    y = np.zeros((len(objs), 10), bool)
    for i, o in enumerate(objs):
        y[i, [x.label for x in o]] = True
    counts, nums = cooccurrence_counts(y)
    cond = counts / nums[:, None]
    base = nums / len(y)
    for group in COMPANION_GROUPS:
        for i in group:
            for j in group:
                if i != j:
                    assert cond[i, j] > base[j] + 0.25, (DEMO_LABELS[i], DEMO_LABELS[j], cond[i, j], base[j])
    # ML-GCN's graph (threshold 0.4) holds exactly the companion edges.
    adj = cooccurrence_adjacency(counts, nums) > 0
    expected = np.eye(10, dtype=bool)
    for group in COMPANION_GROUPS:
        for i in group:
            for j in group:
                expected[i, j] = True
    assert np.array_equal(adj, expected)
    k = y.sum(1)
    assert k.min() == 2 and k.max() == 4


def test_cooccurrence_counts_small_example():
    y = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=torch.bool)
    counts, nums = cooccurrence_counts(y)
    assert counts.dtype == np.int64 and nums.dtype == np.int64
    assert counts.tolist() == [[0, 2, 2], [2, 0, 1], [2, 1, 0]]
    assert nums.tolist() == [3, 2, 2]
    with pytest.raises(InvalidInputError):
        cooccurrence_counts(np.zeros(3))


def test_demo_scenes_is_a_multilabel_dataset():
    ds = DemoScenes(5, seed=2, split="test")
    assert isinstance(ds, MultiLabelDataset)
    assert ds.name == "demo-test" and ds.label_names == DEMO_LABELS and len(ds) == 5
    assert len(set(ds.ids())) == 5
    assert ds.valid().all() and ds.labels().shape == (5, 10)
    x = ds.image(0, (96, 96))
    assert x.dtype == torch.float32 and x.shape == (3, 96, 96)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    img, _ = generate_scenes(1, 2, "test")
    assert torch.equal((x * 255).round().to(torch.uint8), img[0])
    small = ds.image(1, (48, 64))
    assert small.shape == (3, 48, 64) and 0.0 <= float(small.min()) and float(small.max()) <= 1.0
    with pytest.raises(InvalidInputError):
        ds.image(5, (96, 96))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(InvalidInputError, match="split"):
        generate_scenes(1, 0, "val")
    with pytest.raises(InvalidInputError):
        generate_scenes(-1, 0, "train")
    with pytest.raises(DataError, match="make-gallery"):
        load_gallery("/nonexistent/gallery")


def test_committed_gallery_matches_labels_csv():
    root = demo.GALLERY_DIR
    with (root / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 60
    for row in rows:
        assert (root / row["file"]).is_file()
        assert set(row["labels"].split()) <= set(DEMO_LABELS)
        assert 2 <= len(row["labels"].split()) <= 4
    gallery = load_gallery()
    assert gallery.name == "demo" and len(gallery) == len(rows)
    assert gallery.ids() == [r["id"] for r in rows]
    for i, row in enumerate(rows):
        names = [DEMO_LABELS[j] for j in torch.nonzero(gallery.labels()[i]).flatten().tolist()]
        assert sorted(names) == sorted(row["labels"].split())
    assert load_gallery() is gallery  # cached


def test_regenerating_the_gallery_gives_the_committed_pixels(tmp_path):
    manifest = gallery_manifest()
    assert manifest["split"] == "test" and manifest["generator_version"] == demo.GENERATOR_VERSION
    gallery = load_gallery()
    images, labels = generate_scenes(manifest["n"], manifest["seed"], manifest["split"])
    assert len(gallery) == manifest["n"]
    assert torch.equal(labels, gallery.labels())
    committed = (gallery.images() * 255).round().to(torch.uint8)
    assert torch.equal(images, committed)
    # And make_gallery writes files that read back identically.
    demo.make_gallery(tmp_path, n=3, seed=manifest["seed"])
    again = load_gallery(tmp_path)
    assert torch.equal((again.images() * 255).round().to(torch.uint8), images[:3])
    assert again.ids() == gallery.ids()[:3]
