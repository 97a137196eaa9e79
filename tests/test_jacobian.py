"""The batched Jacobian equals l sequential backward passes, for models with BatchNorm in eval mode."""

from __future__ import annotations

import torch
from torch import nn

from mlalp_core.attacks.jacobian import batched_jacobian
from mlalp_core.attacks.losses import bce_at_threshold, per_label_bce
from mlalp_core.models.gcn import GCNClassifier, cooccurrence_adjacency
from mlalp_core.models.liw import LinearHeadClassifier


def _trunk(c: int = 12) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
    )


def _models():
    torch.manual_seed(0)
    labels = [f"l{i}" for i in range(6)]
    counts = torch.randint(0, 30, (6, 6))
    counts = (counts + counts.T).fill_diagonal_(0).numpy()
    gcn = GCNClassifier(_trunk(), 24, torch.eye(6), cooccurrence_adjacency(counts, counts.max(1) + 5), labels,
                        (16, 16), hidden_dim=16)
    liw = LinearHeadClassifier(nn.Sequential(_trunk(), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 24, labels, (16, 16))
    for m in (gcn, liw):
        # give BatchNorm non-trivial running statistics, then freeze them
        m.train()
        with torch.no_grad():
            m(torch.rand(8, 3, 16, 16))
        m.eval()
    return gcn, liw


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_batched_equals_sequential_for_losses_and_outputs():
    x = torch.rand(3, 3, 16, 16)
    target = torch.rand(3, 6) > 0.5
    for model in _models():
        for fn in (lambda z: per_label_bce(model(z), target), lambda z: per_label_bce(model(z), target, 1e-6),
                   model.probabilities):
            v1, j1 = batched_jacobian(fn, x, "batched")
            v2, j2 = batched_jacobian(fn, x, "loop")
            assert j1.shape == (3, 6, 3, 16, 16)
            assert torch.equal(v1, v2)
            assert _rel(j1, j2) <= 1e-5


def test_rows_do_not_mix_across_the_batch():
    gcn, _ = _models()
    x = torch.rand(4, 3, 16, 16)
    target = torch.rand(4, 6) > 0.5
    _, jb = batched_jacobian(lambda z: per_label_bce(gcn(z), target), x)
    _, j0 = batched_jacobian(lambda z: per_label_bce(gcn(z), target[2:3]), x[2:3])
    assert _rel(jb[2:3], j0) <= 1e-5


def test_jacobian_matches_finite_differences():
    """The Jacobian is of the losses with respect to the [0,1] pixels (normalisation inside)."""
    gcn, _ = _models()
    gcn = gcn.double()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    target = torch.tensor([[True, False, True, False, False, True]])
    f = lambda z: per_label_bce(gcn(z), target)
    _, jac = batched_jacobian(f, x)
    direction = torch.randn_like(x)
    eps = 1e-6
    fd = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
    lin = (jac[0].reshape(6, -1) @ direction.reshape(-1))
    assert torch.allclose(fd[0], lin, rtol=1e-5, atol=1e-9)


def test_target_loss_at_the_threshold_is_log2():
    t = bce_at_threshold(torch.tensor([[True, False]]), 0.5)
    assert torch.allclose(t, torch.full((1, 2), 0.6931471805599453))
