"""Targets and attack metrics on known arrays."""

from __future__ import annotations

import math

import pytest
import torch

from mlalp_core.attacks.targets import add, custom, flipped, hide, hide_one
from mlalp_core.errors import InvalidInputError
from mlalp_core.experiments.metrics import label_changes, perturbation_norms
from mlalp_core.training.quality import classification_report

NAMES = ["person", "chair", "dog", "tv"]


def test_hide_one_flips_exactly_one_positive_and_is_seeded_per_example():
    y = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0], [1, 0, 0, 1]]).bool()
    t = hide_one(y, seed=5)
    assert (flipped(y, t).sum(1) == 1).all()
    assert not (t & ~y).any()  # nothing added
    # the choice for an example depends on (seed, example id), not on the batch it is in
    alone = hide_one(y[2:3], seed=5, example_ids=[2])
    assert torch.equal(alone[0], t[2])
    choices = {tuple(hide_one(y[:1], seed=s).tolist()[0]) for s in range(30)}
    assert len(choices) == 3  # every positive label of example 0 gets chosen for some seed


def test_hide_and_add_by_name_with_clear_errors():
    y = torch.tensor([[1, 1, 0, 0]]).bool()
    assert hide(y, ["chair"], NAMES).tolist() == [[True, False, False, False]]
    assert add(y, ["dog", "tv"], NAMES).tolist() == [[True, True, True, True]]
    with pytest.raises(InvalidInputError, match="'dog' is not present"):
        hide(y, ["dog"], NAMES)
    with pytest.raises(InvalidInputError, match="'person' is already present"):
        add(y, ["person"], NAMES)
    with pytest.raises(InvalidInputError, match="unknown label 'cat'"):
        hide(y, ["cat"], NAMES)
    with pytest.raises(InvalidInputError, match="at least one"):
        hide(y, [], NAMES)
    with pytest.raises(InvalidInputError, match="no positive label"):
        hide_one(torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(InvalidInputError, match="nothing to attack"):
        custom(y, y)


def test_perturbation_norms_units():
    r = torch.zeros(1, 3, 2, 2)
    r[0, 0, 0, 0] = 0.5
    r[0, 1, 1, 1] = -0.25
    n = perturbation_norms(r)
    assert float(n["l1"]) == pytest.approx(0.75)
    assert float(n["l2"]) == pytest.approx(math.sqrt(0.25 + 0.0625))
    assert float(n["linf"]) == pytest.approx(0.5)
    rms = math.sqrt((0.25 + 0.0625) / 12)
    assert float(n["rmsd"]) == pytest.approx(255 * rms)  # true 0..255 RMSD
    assert float(n["rmsd_paper"]) == pytest.approx(127.5 * rms)  # the paper's column


def test_paper_rmsd_convention_reproduces_table3():
    """REFERENCE.md's check, through the metric: a perturbation of an ML-GCN input (3 x 448 x 448 =
    602,112 pixels) with the l_2 of the paper's MLA-LP row (0.5585) has the printed RMSD 0.0917."""
    d = 3 * 448 * 448
    r = torch.full((1, 3, 448, 448), 0.5585 / math.sqrt(d), dtype=torch.float64)
    r[..., ::2] *= -1  # signs do not matter to an RMS
    n = perturbation_norms(r)
    assert float(n["l2"]) == pytest.approx(0.5585, rel=1e-12)
    assert float(n["rmsd_paper"]) == pytest.approx(0.0917, abs=1e-4)  # the table averages per example: not exact
    assert float(n["rmsd"]) == pytest.approx(2 * float(n["rmsd_paper"]), rel=1e-12)  # the true 0..255 RMSD


def test_label_changes():
    before = torch.tensor([[0.9, 0.8, 0.1, 0.2]])
    after = torch.tensor([[0.4, 0.3, 0.6, 0.2]])  # hid 0 (wanted), lost 1 and gained 2 (collateral)
    target = torch.tensor([[False, True, False, False]])
    c = label_changes(before, after, target)
    assert c["attacked_total"].item() == 1 and c["attacked_reached"].item() == 1
    assert c["collateral"].item() == 2 and c["labels_wrong"].item() == 2


def test_classification_report_on_known_predictions():
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]]).bool()
    scores = torch.tensor([[0.9, 0.2, 0.4], [0.3, 0.8, 0.1]])
    r = classification_report(scores, labels)
    assert r["hamming_loss"] == pytest.approx(1 / 6)  # one entry wrong (0.4 < 0.5)
    assert r["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert r["macro_f1"] == pytest.approx((1 + 1 + 0) / 3)
    assert r["ranking_loss"] == pytest.approx(0.0)
    assert r["average_precision"] == pytest.approx(1.0)
    assert r["exact_match"] == pytest.approx(0.5)


def test_a_list_of_label_names_is_one_line_not_a_raw_error():
    import mlalp_core as ml
    from mlalp_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"0/1 \(or bool\) values, e.g. model.predict"):
        ml.hide_one(["person", "dog"])
    assert ml.hide_one(torch.tensor([[1, 1, 0]]), seed=0).sum() == 1  # 0/1 integers are labels
