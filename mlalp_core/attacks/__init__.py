"""The five attacks behind one interface (:class:`~mlalp_core.attacks.base.Attack`).

``ATTACKS`` maps each attack's name to its class; ``make_attack(name, model, **settings)``
builds one with the paper's defaults for every setting not given.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from .base import Attack, AttackCancelled, AttackResult, AttackRun, ProgressFn, success_mask
from .carlini_wagner import MLCW, MLRank1, MLRank2
from .ml_deepfool import MLDeepFool
from .mlalp import MLALP

#: name -> class, in the order of the paper's Table III (MLA-LP first here: it is the subject).
ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (MLALP, MLDeepFool, MLCW, MLRank1, MLRank2)
}

#: Display names as the paper writes them.
DISPLAY_NAMES = {"mla-lp": "MLA-LP", "ml-deepfool": "ML-DeepFool", "ml-cw": "ML-CW",
                 "ml-rank1": "ML-Rank1", "ml-rank2": "ML-Rank2"}


def make_attack(name: str, model, **settings: Any) -> Attack:
    """Build an attack by name; unknown names and settings get a clear error."""
    key = name.strip().lower()
    if key not in ATTACKS:
        raise InvalidInputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    try:
        return ATTACKS[key](model, **settings)
    except TypeError as exc:
        raise InvalidInputError(f"{name}: {exc}") from exc


__all__ = ["ATTACKS", "DISPLAY_NAMES", "Attack", "AttackCancelled", "AttackResult", "AttackRun", "ProgressFn",
           "make_attack", "success_mask", "MLALP", "MLDeepFool", "MLCW", "MLRank1", "MLRank2"]
