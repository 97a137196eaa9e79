"""FGSM (Goodfellow, Shlens & Szegedy, ICLR 2015), multi-label: one step of size eps against the
sign of the gradient of the per-label loss toward y*. Distance: l_inf.

Cost: one forward and one backward pass on x (the forward also gives the clean outputs) and one
forward pass on x_adv (its success, also the result's re-check): 3 model calls per image.

Defaults: eps = 8/255 in [0,1] units (the budget most of the literature reports). With
``min_budget=true`` it returns, per example, the smallest eps that reaches y* (see
:mod:`mlalp_core.attacks.gradient`).

Example::

    result = make_attack("fgsm", model, min_budget=True)(x, hide_one(model.predict(x)))
"""

from __future__ import annotations

from typing import ClassVar

from .gradient import EPS_LINF, IterativeGradient, budget_settings
from .schema import Schema


class FGSM(IterativeGradient):
    name: ClassVar[str] = "fgsm"
    display_name: ClassVar[str] = "FGSM"
    norm: ClassVar[str] = "linf"
    schema: ClassVar[Schema] = Schema("fgsm", budget_settings(EPS_LINF, 1.0, "linf"))
