"""Per-label losses the attacks differentiate.

MLA-LP's constraint (the paper's eq. (6)-(8)) is on the per-label binary cross-entropy of the
sigmoid outputs, not averaged over labels. Two forms are offered: the exact one computed from
logits (finite gradients even for saturated outputs) and the authors' form on probabilities
clamped to [1e-6, 1-1e-6] (zero gradient once an output saturates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The clamp of the authors' code.
AUTHORS_CLAMP = 1e-6


def per_label_bce(logits: torch.Tensor, target: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """(B, l) losses -(y log o + (1-y) log(1-o)) with o = sigmoid(logits), y = target in {0,1}."""
    y = target.to(logits.dtype)
    if clamp is None:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    o = torch.sigmoid(logits).clamp(clamp, 1.0 - clamp)
    return -(y * torch.log(o) + (1 - y) * torch.log1p(-o))


def bce_at_threshold(target: torch.Tensor, threshold: float | torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """loss(t, y*): the per-label loss if every output sat exactly at its threshold t.

    ``threshold`` may be a scalar or a (B, l) tensor of per-label thresholds (the margin schedule).
    """
    y = target.to(dtype)
    t = torch.as_tensor(threshold, dtype=dtype, device=target.device)
    return -(y * torch.log(t) + (1 - y) * torch.log1p(-t))

