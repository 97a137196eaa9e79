"""Attack metrics, with their units in their names (Table III).

They work on r = x_adv - x in [0,1] pixel units. Two RMSDs are given: the true one on the 0..255
scale (255 * RMS(r)) and the one printed in the paper's Table III (127.5 * RMS(r): a [-1,1]
formula applied to [0,1] data; ``rmsd_paper``). Classifier quality (Table I) is in
:mod:`mlalp_core.training.quality`.
"""

from __future__ import annotations

from typing import Any

import torch

# ---------------------------------------------------------------------------------------------
# Attack metrics
# ---------------------------------------------------------------------------------------------


def perturbation_norms(r: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example norms of perturbations r (B, ...) in [0,1] units, as float64 tensors (B,)."""
    flat = r.detach().reshape(r.shape[0], -1).double()
    rms = flat.pow(2).mean(1).sqrt()
    return {
        "l1": flat.abs().sum(1),
        "l2": flat.pow(2).sum(1).sqrt(),
        "linf": flat.abs().amax(1) if flat.shape[1] else torch.zeros(flat.shape[0], dtype=torch.float64),
        "rmsd": 255.0 * rms,
        "rmsd_paper": 127.5 * rms,
    }


def label_changes(
    probs_clean: torch.Tensor, probs_adv: torch.Tensor, target: torch.Tensor, threshold: float = 0.5
) -> dict[str, torch.Tensor]:
    """Per-example label bookkeeping (B,):

    - ``labels_wrong``: labels that disagree with y* after the attack;
    - ``collateral``: labels that should not have changed (y* equals the clean prediction) but did;
    - ``attacked_reached``: labels that had to change and did.
    """
    before = probs_clean >= threshold
    after = probs_adv >= threshold
    t = target.bool()
    must_change = before != t
    return {
        "labels_wrong": (after != t).sum(1),
        "collateral": (~must_change & (after != before)).sum(1),
        "attacked_reached": (must_change & (after == t)).sum(1),
        "attacked_total": must_change.sum(1),
    }


def attack_metrics(result: Any) -> list[dict[str, Any]]:
    """One flat dict per example of an :class:`~mlalp_core.attacks.base.AttackResult`."""
    norms = perturbation_norms(result.perturbation)
    changes = label_changes(result.probs_clean, result.probs_adv, result.target, result.threshold)
    rows = []
    for i in range(result.batch_size):
        row = {
            "attack": result.attack,
            "success": bool(result.success[i]),
            "iterations": int(result.iterations[i]),
            "model_calls": int(result.model_calls[i]),
            "time_s": float(result.elapsed_s[i]),
        }
        row.update({k: float(v[i]) for k, v in norms.items()})
        row.update({k: int(v[i]) for k, v in changes.items()})
        rows.append(row)
    return rows
