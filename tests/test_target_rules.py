"""Target builders against their rules (README, attacks/targets.py): which labels each objective
flips, what it refuses, labels in any of the conventions ({0,1}, the paper's {-1,+1}, bool), and
draws that stay the same from one version to the next (the run key does not record the mlalp
version, so a resumed run must draw its remaining targets the way it drew the first ones)."""

from __future__ import annotations

import pytest
import torch

from mlalp_core.attacks.targets import (
    OBJECTIVES,
    add,
    build_target,
    custom,
    flipped,
    hide,
    hide_all,
    hide_one,
    parse_objective,
    show_k,
    show_many,
)
from mlalp_core.errors import InvalidInputError

NAMES = ["a", "b", "c", "d", "e", "f", "g", "h"]
Y = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]] * 6).bool()
IDS = [0, 1, 7, 123, 10**6, 2**40]


def test_the_random_draws_are_those_of_earlier_versions():
    """Pinned draws (hidden label per example; labels shown per example) for three seeds."""
    hidden = {0: [0, 1, 3, 2, 2, 0], 3: [0, 3, 0, 3, 0, 0], 12345: [0, 2, 1, 2, 2, 0],
              10**13: [0, 2, 2, 1, 1, 0]}  # a seed whose mix passes 2**63: reduced modulo 2**63 - 1
    shown = {0: [[5, 7], [4, 7], [4, 7], [4, 5], [4, 6], [5, 7]],
             3: [[4, 7], [6, 7], [4, 6], [4, 6], [4, 5], [4, 7]],
             12345: [[5, 6], [5, 7], [5, 7], [4, 6], [4, 6], [5, 6]],
             10**13: [[4, 7], [5, 6], [4, 6], [4, 7], [4, 6], [4, 7]]}
    for seed in hidden:
        t = hide_one(Y, seed=seed, example_ids=IDS)
        assert (Y & ~t).int().argmax(1).tolist() == hidden[seed]
        s = show_k(Y, 2, seed=seed, example_ids=IDS)
        assert [sorted((s[i] & ~Y[i]).nonzero().flatten().tolist()) for i in range(6)] == shown[seed]
    # the default seed is 0 (the command line's) in every builder
    assert torch.equal(build_target("hide-one", Y, example_ids=IDS), hide_one(Y, seed=0, example_ids=IDS))
    assert torch.equal(build_target("show-k:2", Y, example_ids=IDS), show_k(Y, 2, seed=0, example_ids=IDS))
    assert torch.equal(hide_one(Y, example_ids=IDS), hide_one(Y, seed=0, example_ids=IDS))
    assert torch.equal(show_k(Y, 2, example_ids=IDS), show_k(Y, 2, seed=0, example_ids=IDS))
    assert torch.equal(hide_one(Y, seed=3), hide_one(Y, seed=3, example_ids=range(6)))  # ids default to positions


@pytest.mark.parametrize("convention", ["bool", "01", "pm1", "float"])
def test_every_label_convention_gives_the_same_targets(convention):
    y = {"bool": Y, "01": Y.long(), "pm1": Y.long() * 2 - 1, "float": Y.float()}[convention]
    assert torch.equal(hide_one(y, seed=1, example_ids=IDS), hide_one(Y, seed=1, example_ids=IDS))
    assert torch.equal(show_k(y, 3, seed=1), show_k(Y, 3, seed=1))
    assert torch.equal(hide(y, ["b", 2], NAMES), hide(Y, ["b", 2], NAMES))
    assert torch.equal(flipped(y, hide_all(y)), Y)
    one = y[0]  # a single example (l,) is a batch of one
    assert hide_one(one, seed=1).shape == (1, 8)


def test_show_k_adds_exactly_k_absent_labels_and_refuses_what_it_cannot():
    t = show_k(Y, 3, seed=2, example_ids=IDS)
    assert torch.equal(t & Y, Y) and ((t & ~Y).sum(1) == 3).all()
    assert torch.equal(show_k(Y, 4, seed=0), torch.ones_like(Y))  # every absent label
    for k in (0, -1, True, 1.5, "2"):
        with pytest.raises(InvalidInputError, match="k must be a positive integer"):
            show_k(Y, k)
    with pytest.raises(InvalidInputError, match="fewer than k = 5"):
        show_k(Y, 5)
    assert not torch.equal(show_k(Y, 1, seed=0, example_ids=IDS), show_k(Y, 1, seed=1, example_ids=IDS))


def test_hide_all_and_show_many_refuse_any_example_they_cannot_change():
    y = torch.tensor([[1, 0, 1], [0, 1, 0]]).bool()
    assert torch.equal(hide_all(y), torch.zeros_like(y)) and torch.equal(show_many(y), torch.ones_like(y))
    with pytest.raises(InvalidInputError, match="1 example"):
        hide_all(torch.tensor([[1, 0, 1], [0, 0, 0]]).bool())  # one example among others: refused
    with pytest.raises(InvalidInputError, match="1 example"):
        show_many(torch.tensor([[1, 0, 1], [1, 1, 1]]).bool())
    with pytest.raises(InvalidInputError, match="no positive label to hide"):
        hide_one(torch.tensor([[1, 0, 1], [0, 0, 0]]).bool())


def test_custom_targets_broadcast_one_row_and_refuse_wrong_shapes():
    y = torch.tensor([[1, 0, 1], [0, 1, 0]]).bool()
    t = custom(y, torch.tensor([1, 1, 1]))  # one target for the batch
    assert t.shape == (2, 3) and bool(t.all())
    assert torch.equal(custom(y[:1], torch.tensor([[0, 0, 1]])), torch.tensor([[False, False, True]]))
    one_label = custom(torch.tensor([[1], [1]]), torch.tensor([0]))  # a one-label model, a batch of two
    assert one_label.tolist() == [[False], [False]]
    with pytest.raises(InvalidInputError, match="target has 4 labels, the model has 3"):
        custom(y, torch.ones(2, 4))
    with pytest.raises(InvalidInputError, match="does not match"):
        custom(y, torch.ones(3, 3))
    with pytest.raises(InvalidInputError, match="1 example"):
        custom(y, torch.tensor([[0, 0, 1], [0, 1, 0]]))  # the second example already is its target
    with pytest.raises(InvalidInputError, match=r"labels must be \(B, l\)"):
        custom(y, torch.ones(1, 1, 3))


def test_labels_by_name_or_index_and_their_errors():
    y = torch.tensor([[1, 1, 0, 0]]).bool()
    assert torch.equal(hide(y, [1], None), torch.tensor([[True, False, False, False]]))
    assert torch.equal(add(y, ["c", 3], ["a", "b", "c", "d"]), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(InvalidInputError, match="out of range 0..3"):
        hide(y, [4], None)
    with pytest.raises(InvalidInputError, match="out of range"):
        hide(y, [-1], None)
    with pytest.raises(InvalidInputError, match="unknown label 'a'"):
        hide(y, ["a"], None)  # names without a list of names
    with pytest.raises(InvalidInputError, match="at least one label to add"):
        add(y, [], None)


@pytest.mark.parametrize("text, expect", [
    ("hide-one", ("hide-one", None)), (" Hide-One ", ("hide-one", None)), ("hide-all", ("hide-all", None)),
    ("show-many", ("show-many", None)), ("show-k:1", ("show-k", 1)), ("show-k: 3 ", ("show-k", 3)),
    ("hide:a, c", ("hide", ("a", "c"))), ("add:d", ("add", ("d",))),
])
def test_objectives_parse_exactly(text, expect):
    assert parse_objective(text, NAMES) == expect


@pytest.mark.parametrize("text, words", [
    ("hide-some", "unknown objective"), ("show-k", "show-k takes a positive number"),
    ("show-k:0", "show-k takes a positive number"), ("show-k:x", "show-k takes a positive number"),
    ("hide:", "hide takes label names"), ("add: , ", "add takes label names"),
    ("hide:zz", "unknown label"), ("hide-one:2", "takes no argument"), ("show-many:1", "takes no argument"),
])
def test_objectives_that_cannot_be_parsed_are_refused(text, words):
    with pytest.raises(InvalidInputError, match=words):
        parse_objective(text, NAMES)


def test_every_objective_builds_the_target_it_names():
    y = Y[:2]
    assert set(OBJECTIVES) == {"hide-one", "hide-all", "hide", "add", "show-k", "show-many"}
    assert torch.equal(build_target("hide-one", y, seed=4, example_ids=[5, 6]), hide_one(y, seed=4, example_ids=[5, 6]))
    assert torch.equal(build_target("hide-all", y), torch.zeros_like(y))
    assert torch.equal(build_target("show-many", y), torch.ones_like(y))
    assert torch.equal(build_target("show-k:2", y, seed=4, example_ids=[5, 6]),
                       show_k(y, 2, seed=4, example_ids=[5, 6]))
    assert torch.equal(build_target("hide:b,c", y, label_names=NAMES), hide(y, ["b", "c"], NAMES))
    assert torch.equal(build_target("add:e", y, label_names=NAMES), add(y, ["e"], NAMES))


def test_what_is_not_labels_is_named_in_one_line_cut_only_when_too_long():
    """Label names (a list, a numpy array of str, one str) or nothing at all instead of label values:
    one line naming what was given; the value shown whole when its text fits the 60 characters
    shown, else cut to 60 with '...' (never cut when it fits)."""
    import numpy as np

    from mlalp_core.errors import InvalidInputError

    for bad in (["person", "dog"], np.array(["person", "dog"]), "person", None, {"person": 1}):
        with pytest.raises(InvalidInputError, match=r"labels must be a \(B, l\) tensor of 0/1") as info:
            hide_one(bad)
        assert "\n" not in str(info.value)
    for n in range(55, 66):
        bad = "x" * (n - 2)  # repr adds the two quotes: n characters
        with pytest.raises(InvalidInputError) as info:
            hide_one(bad)
        shown = str(info.value).split("; got ", 1)[1]
        assert len(shown) <= 60 and (shown == repr(bad) if n <= 60 else shown == repr(bad)[:57] + "...")


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                                   torch.float16, torch.float32, torch.float64])
def test_labels_of_every_integer_float_or_bool_dtype_give_the_same_targets(dtype):
    """0/1 labels as any tensor dtype a data loader hands out (numpy int32 arrays among them)."""
    want = hide_one(Y.bool(), seed=3, example_ids=IDS)
    assert torch.equal(hide_one(Y.to(dtype), seed=3, example_ids=IDS), want)
    assert torch.equal(build_target("hide-one", Y.to(dtype), seed=3, example_ids=IDS), want)
