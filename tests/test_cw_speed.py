"""The CW family's savings: the in-place path while every image runs (same numbers as gathering
by index), and the two stopping rules of mode mlalp (``success_patience``: a binary step whose
best iterate already reaches y* and stands still stops; ``give_up_after``: an image whose c only
grew without a success stops the search). The authors' mode has neither."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import synthetic_scenes, train_tiny

from mlalp_core.attacks.carlini_wagner import (
    _KEEP_ALL,
    MLCW,
    CarliniWagnerL2,
    MLRank1,
    MLRank2,
)
from mlalp_core.attacks.cw_state import _StepState
from mlalp_core.attacks.targets import hide_one
from mlalp_core.errors import InvalidInputError
from mlalp_core.models.base import MultiLabelClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    model = train_tiny()
    x, y = synthetic_scenes(64, torch.Generator().manual_seed(1))
    pred = model.predict(x)
    ok = ((pred == y).all(1) & (pred.sum(1) >= 2)).nonzero().flatten()[:4]
    assert len(ok) == 4
    return model, x[ok], hide_one(pred[ok], seed=0)


def _same(a, b) -> None:
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.model_calls, b.model_calls) and torch.equal(a.iterations, b.iterations)
    def nan_free(trace):  # NaN != NaN: compare NaN entries as None
        return [[{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()} for s in tr]
                for tr in trace]

    assert nan_free(a.trace) == nan_free(b.trace)


@pytest.mark.parametrize("cls", [MLCW, MLRank1, MLRank2])
@pytest.mark.parametrize("mode", ["mlalp", "authors"])
def test_in_place_path_gives_the_numbers_of_the_gathered_path(tiny, cls, mode, monkeypatch):
    """Checks every 4 iterations, so images leave mid-step and both paths are exercised."""
    model, x, target = tiny
    kw = dict(max_iterations=24, binary_search_steps=3, abort_every=4, learning_rate=0.1, mode=mode, device="cpu")
    fast = cls(model, **kw)(x, target)
    monkeypatch.setattr(CarliniWagnerL2, "in_place_when_whole", False)
    gathered = cls(model, **kw)(x, target)
    _same(fast, gathered)
    if mode == "mlalp":  # some image left some step early: the gathered path ran too
        assert any(s["aborted"] for tr in fast.trace for s in tr)


def test_success_patience_stops_a_settled_step_and_not_one_still_improving(tiny):
    model = tiny[0]
    attack = MLCW(model, device="cpu", max_iterations=1000)  # checks every 100; patience 2 checks
    assert attack.success_patience == 2 and attack.check_every == 100
    ss = _StepState.new(torch.zeros(4, 3, 2, 2))
    ss.success = torch.tensor([True, True, False, True])
    ss.improved_at = torch.tensor([50, 150, 0, 50])  # the step's best last changed at these iterations
    ss.prev = torch.full((4,), 10.0, dtype=torch.float64)
    loss = torch.tensor([5.0, 5.0, 5.0, 11.0], dtype=torch.float64)  # the last one's loss stalls
    idx = torch.arange(4)
    assert attack._abort_check(ss, 250, idx, loss) is _KEEP_ALL  # not a check iteration
    keep = attack._abort_check(ss, 300, idx, loss)
    # settled 250 iterations >= 200: stops; bettered 150 ago: goes on; no success yet: goes on; loss stalled: stops
    assert keep.tolist() == [False, True, True, False]
    assert ss.active.tolist() == [False, True, True, False]
    off = MLCW(model, device="cpu", max_iterations=1000, success_patience=0)
    ss = _StepState.new(torch.zeros(4, 3, 2, 2))
    ss.success, ss.improved_at = torch.tensor([True, True, False, True]), torch.tensor([50, 150, 0, 50])
    ss.prev = torch.full((4,), 10.0, dtype=torch.float64)
    assert off._abort_check(ss, 300, idx, loss).tolist() == [True, True, True, False]


class _Linear(MultiLabelClassifier):
    """logits = W x + b on the flattened [0,1] image."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, size: int) -> None:
        super().__init__([f"l{j}" for j in range(weight.shape[0])], (size, size))
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1) @ self.weight.T + self.bias


def test_success_patience_keeps_the_search_and_saves_iterations():
    """At the paper's settings (c from 1e5, 1000 iterations, a check every 100) Adam's momentum
    carries the iterate past its first crossing, which stays the best while the loss keeps
    falling back towards it: the loss rule never fires, the patience rule does (2 checks after
    the crossing). The rule only stops steps already won, so every verdict and c is the same,
    and here the returned images are too."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3 * 8 * 8, generator=g)
    x = 0.3 + 0.4 * torch.rand(2, 3, 8, 8, generator=g)
    model = _Linear(w, torch.tensor([3.0, 4.0, -4.0]) - w @ x[0].flatten(), 8).eval()
    target = torch.tensor([[False, True, False]] * 2)
    on = MLCW(model, binary_search_steps=3, device="cpu")(x, target)
    off = MLCW(model, binary_search_steps=3, success_patience=0, device="cpu")(x, target)
    for a, b in zip(on.trace, off.trace):
        assert [(s["c"], s["step_success"]) for s in a] == [(s["c"], s["step_success"]) for s in b]
        assert [s["iterations"] for s in b] == [1000] * 3 and [s["iterations"] for s in a] == [301] * 3
    assert on.success.all() and torch.equal(on.x_adv, off.x_adv)


class _OneStuck(MultiLabelClassifier):
    """Label 0 follows channel 0's mean (off at 0.25, on from 0.275); label 1 is saturated on (zero gradient)."""

    def __init__(self) -> None:
        super().__init__(["live", "stuck"], (8, 8))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        live = 8.0 * z[:, 0].flatten(1).mean(1) - 2.2
        return torch.stack([live, 40.0 + 0 * live], 1)


def test_give_up_after_stops_only_the_image_whose_c_only_grows():
    model = _OneStuck().eval()
    x = torch.full((2, 3, 8, 8), 0.25)
    target = torch.tensor([[True, True], [True, False]])  # image 1 asks the stuck label off: impossible
    kw = dict(max_iterations=20, binary_search_steps=6, device="cpu")
    res = MLCW(model, **kw)(x, target)
    never = MLCW(model, give_up_after=0, **kw)(x, target)
    alone = MLCW(model, **kw)(x[:1], target[:1])
    assert bool(res.success[0]) and not bool(res.success[1])
    assert len(res.trace[0]) == 6 and len(never.trace[1]) == 6
    assert [s["c"] for s in res.trace[1]] == [1e5, 1e6] and res.trace[1][-1]["gave_up"]
    assert "gave up" in res.notes[1]
    assert int(res.model_calls[1]) < int(never.model_calls[1])
    # the other image is not affected by its batch mate giving up
    assert torch.equal(res.x_adv[0], alone.x_adv[0]) and res.trace[0] == alone.trace[0]
    assert torch.equal(res.x_adv[0], never.x_adv[0])


def test_the_authors_mode_has_neither_rule(tiny):
    model = tiny[0]
    assert MLCW(model).success_patience == 2 and MLRank1(model).success_patience == MLRank2(model).success_patience == 0
    assert MLCW(model).give_up_after == MLRank2(model).give_up_after == 2
    authors = MLRank2(model, mode="authors")
    assert authors.give_up_after == 0 and authors.success_patience == 0
    for setting in ("give_up_after", "success_patience"):
        with pytest.raises(InvalidInputError, match=setting):
            MLCW(model, mode="authors", **{setting: 2})
