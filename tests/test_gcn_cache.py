"""The GCN label branch's cache gives what recomputing gives, to the bit, and only then is used;
attacks run the model with frozen parameters (restored after) so that it is used there."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mlalp_core.allocator import reuse_freed_memory
from mlalp_core.attacks import make_attack
from mlalp_core.attacks.base import Attack
from mlalp_core.attacks.targets import hide_one
from mlalp_core.models.base import frozen_parameters
from mlalp_core.models.gcn import GCNClassifier, cooccurrence_adjacency

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gcn(seed: int = 0) -> GCNClassifier:
    torch.manual_seed(seed)
    labels = [f"l{i}" for i in range(5)]
    counts = torch.randint(0, 30, (5, 5))
    counts = (counts + counts.T).fill_diagonal_(0).numpy()
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
    model = GCNClassifier(trunk, 16, torch.randn(5, 7), cooccurrence_adjacency(counts, counts.max(1) + 5), labels,
                          (16, 16), hidden_dim=12)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model(torch.rand(8, 3, 16, 16))
    return model.eval()


class Counting:
    """Counts how often the model's label branch is computed (the cache misses)."""

    def __init__(self, model: GCNClassifier) -> None:
        self.n = 0
        compute = model.label_classifiers

        def counted() -> torch.Tensor:
            self.n += 1
            return compute()

        model.label_classifiers = counted  # type: ignore[method-assign]


def _logits_and_grad(model: GCNClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(torch.sigmoid(logits).pow(2).sum(), x)
    return logits.detach(), g


def _uncached(model: GCNClassifier, x: torch.Tensor, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    with monkeypatch.context() as m:
        m.setattr(GCNClassifier, "cache_label_branch", False)
        return _logits_and_grad(model, x)


def _check(model: GCNClassifier, x: torch.Tensor, monkeypatch) -> None:
    want = _uncached(model, x, monkeypatch)
    for _ in range(3):
        got = _logits_and_grad(model, x)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_cached_equals_uncached_and_follows_every_change(monkeypatch):
    model, x = _gcn(), torch.rand(4, 3, 16, 16)
    calls = Counting(model)
    with frozen_parameters(model):
        _check(model, x, monkeypatch)
        assert calls.n == 1 + 1  # the uncached reference, then once for three cached calls
        with torch.no_grad():  # a weight changes in place
            model.gc2.weight.mul_(1.5)
        _check(model, x, monkeypatch)
        model.load_state_dict(_gcn(seed=1).state_dict())  # copies into the same tensors
        _check(model, x, monkeypatch)
        other = _gcn(seed=2)
        model.load_state_dict(other.state_dict(), assign=True)  # new tensors (frozen: no grad needed here)
        for p in model.parameters():
            p.requires_grad_(False)
        _check(model, x, monkeypatch)
        model.train()  # train mode: BatchNorm uses the batch; the branch must still agree
        _check(model, x, monkeypatch)
        model.eval()
        model.word_vectors.add_(0.25)  # the non-persistent buffer
        _check(model, x, monkeypatch)
        model.relu.negative_slope = 0.1
        _check(model, x, monkeypatch)
        n = calls.n
        _logits_and_grad(model, x)
        assert calls.n == n  # nothing changed since: reused


def test_conversions_and_copies_recompute(monkeypatch):
    model, x = _gcn(), torch.rand(3, 3, 16, 16)
    with frozen_parameters(model):
        _logits_and_grad(model, x)
        model.double()
        assert model._label_cache is None
        out = model.cached_label_classifiers()
        assert out.dtype == torch.float64
        _check(model, x.double(), monkeypatch)
        model.float()
        _check(model, x, monkeypatch)
        twin = copy.deepcopy(model)
        with torch.no_grad():
            twin.gc1.weight.mul_(2)
        _check(twin, x, monkeypatch)
        _check(model, x, monkeypatch)  # the copy's change is not the original's
        out = model.cached_label_classifiers()
        with torch.no_grad():
            out.mul_(3)  # someone writes into the returned tensor: not reused
        _check(model, x, monkeypatch)
        for _ in range(3):  # new memory under the same parameter (the old stays held: no address reuse)
            model.gc2.weight.data = model.gc2.weight.detach() * 1.25
            _check(model, x, monkeypatch)


def test_training_gradients_are_never_taken_from_the_cache(monkeypatch):
    """Grad mode on and parameters requiring grad (training): computed afresh, gradients reach gc1/gc2."""
    model, x = _gcn(), torch.rand(4, 3, 16, 16)
    calls = Counting(model)
    model.train()
    with torch.no_grad():
        model(x)  # fills the cache, in train mode as the step below
    n = calls.n
    grads = []
    for cache in (True, True, False):
        with monkeypatch.context() as m:
            m.setattr(GCNClassifier, "cache_label_branch", cache)
            model.zero_grad()
            model(x).sum().backward()
            grads.append([p.grad.clone() for p in (model.gc1.weight, model.gc2.weight)])
    assert calls.n == n + 3
    for other in grads[1:]:
        assert all(torch.equal(a, b) and a.abs().sum() > 0 for a, b in zip(grads[0], other))
    model.eval()
    # a training step changes the weights: the next no-grad call sees the new ones
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
        got = model(x)
    with monkeypatch.context() as m, torch.no_grad():
        m.setattr(GCNClassifier, "cache_label_branch", False)
        assert torch.equal(got, model(x))


def test_inference_mode_and_autocast_are_not_cached():
    model, x = _gcn(), torch.rand(2, 3, 16, 16)
    model._label_cache = None  # _gcn's no-grad call filled it
    with torch.inference_mode():
        model(x)
    assert model._label_cache is None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert model._label_cache is None
    with frozen_parameters(model):  # usable with autograd after inference mode
        _logits_and_grad(model, x)
    assert model._label_cache is not None


def test_frozen_parameters_restores_nested_and_on_error():
    model = _gcn()
    trainable = [p.requires_grad for p in model.parameters()]
    assert any(trainable) and not all(trainable)  # A never trains
    with pytest.raises(RuntimeError):
        with frozen_parameters(model):
            with frozen_parameters(model):
                assert not any(p.requires_grad for p in model.parameters())
            assert not any(p.requires_grad for p in model.parameters())  # the outer block still holds
            raise RuntimeError("boom")
    assert [p.requires_grad for p in model.parameters()] == trainable


def test_reuse_freed_memory_nests():
    import mlalp_core.allocator as alloc

    with reuse_freed_memory():
        with reuse_freed_memory():
            x = torch.rand(1000, 1000)
        assert alloc._depth in (0, 1)  # 0 where glibc is not there (the block does nothing)
    assert alloc._depth == 0 and x.shape == (1000, 1000)


def test_freed_memory_goes_back_only_after_an_idle_time(monkeypatch):
    """Consecutive attack calls (a batch run) keep the freed memory; it goes back to the system
    once no block has started for TRIM_AFTER_IDLE_S."""
    import time

    import mlalp_core.allocator as alloc

    if alloc._glibc() is None:
        pytest.skip("not glibc: the block does nothing")
    trims = []
    real = alloc._give_back
    monkeypatch.setattr(alloc, "TRIM_AFTER_IDLE_S", 0.3)
    monkeypatch.setattr(alloc, "_give_back", lambda: (trims.append(time.perf_counter()), real()))
    for _ in range(3):  # back to back: the pending trim of one block is cancelled by the next
        with reuse_freed_memory():
            torch.rand(500, 500)
        time.sleep(0.1)
    assert trims == [] and alloc.pending()
    time.sleep(0.8)
    assert len(trims) == 1 and not alloc.pending()
    with reuse_freed_memory():  # the same thread serves the next idle time
        torch.rand(500, 500)
    time.sleep(0.8)
    assert len(trims) == 2 and not alloc.pending()


@pytest.mark.parametrize("name", ["ml-cw", "ml-rank2", "mla-lp", "ml-deepfool"])
def test_attacks_use_the_cache_and_give_the_numbers_without_it(name, monkeypatch):
    """Attacks run the model with frozen parameters (restored afterwards), so the label branch is
    computed about once per attack; the results equal those of the code without the cache, the
    freezing and the allocator setting, to the bit."""
    model, x = _gcn(), torch.rand(3, 3, 16, 16)
    target = hide_one(model.predict(x) | (torch.arange(5) < 2), seed=0)
    flags = [p.requires_grad for p in model.parameters()]
    kw = dict(max_iterations=12, binary_search_steps=2) if name.startswith("ml-") and name != "ml-deepfool" else {}
    calls = Counting(model)
    fast = make_attack(name, model, device="cpu", **kw)(x, target)
    assert calls.n <= 3
    assert [p.requires_grad for p in model.parameters()] == flags
    monkeypatch.setattr(GCNClassifier, "cache_label_branch", False)
    monkeypatch.setattr(Attack, "frozen_model", False)
    monkeypatch.setattr(Attack, "keep_freed_memory", False)
    slow = make_attack(name, model, device="cpu", **kw)(x, target)
    assert calls.n > 10
    assert torch.equal(fast.x_adv, slow.x_adv) and torch.equal(fast.success, slow.success)
    assert torch.equal(fast.probs_adv, slow.probs_adv) and torch.equal(fast.model_calls, slow.model_calls)
