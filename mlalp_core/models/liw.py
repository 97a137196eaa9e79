"""ML-LIW's pieces (Song et al., ICDM 2018): a linear head and the LIW ranking loss of eq. (19).

Shared by ``demo-liw`` and the full-size Inception-v3 ``ml-liw``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import MultiLabelClassifier


def liw_loss(
    probs: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    instance_weight: float = 0.5,
) -> torch.Tensor:
    """Instance-wise + label-wise exponential ranking loss (the paper's eq. (19)).

    E = lam * mean_i [ sum_{k in Y_i, m not in Y_i} exp(-(o_ik - o_im)) / (|Y_i| |~Y_i|) ]
        + mean_j [ sum_{p in Y_j, q not in Y_j} exp(-(o_pj - o_qj)) / (|Y_j| |~Y_j|) ]

    probs: (B, l) sigmoid outputs. targets: (B, l) bool or {0,1}. valid: (B, l) bool mask of the
    entries that take part (e.g. VOC 'difficult' labels excluded); every pair needs both ends
    valid. Instances (labels) without a positive-negative pair contribute zero.
    """
    y = targets.bool()
    m = torch.ones_like(y) if valid is None else valid.bool()
    pos = (y & m).to(probs.dtype)
    neg = (~y & m).to(probs.dtype)
    n, l = probs.shape

    # Instance-wise: pairs (k, m) of labels within each example.
    e_inst = torch.exp(-(probs[:, :, None] - probs[:, None, :]))  # (B, l, l)
    pair_i = pos[:, :, None] * neg[:, None, :]
    denom_i = pos.sum(1) * neg.sum(1)
    per_inst = (e_inst * pair_i).sum((1, 2)) / denom_i.clamp_min(1.0)
    inst = per_inst.sum() / n

    # Label-wise: pairs (p, q) of examples within each label.
    e_lab = torch.exp(-(probs[:, None, :] - probs[None, :, :]))  # (B, B, l)
    pair_l = pos[:, None, :] * neg[None, :, :]
    denom_l = pos.sum(0) * neg.sum(0)
    per_label = (e_lab * pair_l).sum((0, 1)) / denom_l.clamp_min(1.0)
    lab = per_label.sum() / l

    return instance_weight * inst + lab


class LinearHeadClassifier(MultiLabelClassifier):
    """A trunk producing a (B, F) feature and one linear layer to l logits (ML-LIW's shape)."""

    def __init__(
        self,
        trunk: nn.Module,
        feature_dim: int,
        label_names: Sequence[str],
        input_size: tuple[int, int],
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        threshold: float = 0.5,
    ) -> None:
        super().__init__(label_names, input_size, mean, std, threshold)
        self.trunk = trunk
        self.fc = nn.Linear(feature_dim, len(label_names))

    def classify(self, x_normalized: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x_normalized).flatten(1))
