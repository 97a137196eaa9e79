"""The CW family's loss1 terms, on sigmoid outputs f (B, l) and y* in {-1,+1} (B, l); each
returns (B,). Plain functions, so that tests check them against the paper's formulas."""

from __future__ import annotations

import torch


def ml_cw_loss(probs: torch.Tensor, target_pm1: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """ML-CW: sum_j max(0, -y*_j (f_j - t)): how far each label is on the wrong side of t."""
    return torch.clamp(-target_pm1.to(probs.dtype) * (probs - threshold), min=0.0).sum(dim=1)


def _masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values.masked_fill(~mask, float("-inf")).amax(dim=1)


def _masked_min(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values.masked_fill(~mask, float("inf")).amin(dim=1)


def _rank_gap(probs: torch.Tensor, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """max(0, max_{j in high} f_j - min_{k in low} f_k), and 0 where either set is empty."""
    gap = _masked_max(probs, high) - _masked_min(probs, low)  # -inf when a set is empty
    defined = high.any(dim=1) & low.any(dim=1)
    return torch.where(defined, torch.clamp(gap, min=0.0), torch.zeros_like(gap))


def rank1_loss(probs: torch.Tensor, target_pm1: torch.Tensor) -> torch.Tensor:
    """ML-Rank1: max(0, max_{y*_j=-1} f_j - min_{y*_j=+1} f_j).

    0 when y* has no positive or no negative label (the authors' masking gives the same for
    sigmoid outputs: the missing side contributes 0 to the max, 1 to the min).
    """
    return _rank_gap(probs, target_pm1 < 0, target_pm1 > 0)


def rank2_loss(probs: torch.Tensor, target_pm1: torch.Tensor, hidden_mask: torch.Tensor,
               stay_negative_mask: torch.Tensor) -> torch.Tensor:
    """ML-Rank2: Rank1 + max(0, max_{j in A+} f_j - min_{k in B-} f_k).

    A+ (``hidden_mask``) are the labels being hidden (positive before the attack, negative in y*);
    B- (``stay_negative_mask``) the labels negative before and in y*. The second term is 0 when
    A+ or B- is empty (nothing to hide, or no label that stays negative).
    """
    return rank1_loss(probs, target_pm1) + _rank_gap(probs, hidden_mask.bool(), stay_negative_mask.bool())


def labels_matching(probs: torch.Tensor, target: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B,) number of labels whose prediction at ``threshold`` equals y* (bool or {-1,+1})."""
    return ((probs >= threshold) == (target > 0)).sum(dim=1)
