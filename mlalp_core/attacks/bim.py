"""BIM / I-FGSM (Kurakin, Goodfellow & Bengio, ICLR 2017 workshop), multi-label: FGSM repeated with
a small step, projected back into the eps-ball after each step. Distance: l_inf.

Defaults from the paper: step alpha = 1/255 and min(eps*255 + 4, 1.25 eps*255) iterations, which
for eps = 8/255 is a step of eps/8 for 10 iterations. The step is set as a fraction of eps, so the
minimum-budget search scales it with the budget.
"""

from __future__ import annotations

from typing import ClassVar

from .gradient import EPS_LINF, IterativeGradient, budget_settings
from .schema import Schema, Setting

ITERATIVE = (
    Setting("iterations", int, 10, "gradient steps", "iterations", low=1, high=10_000),
    Setting("step", float, 0.125, "the step size as a fraction of eps", "step / eps", low=0.0, high=2.0,
            low_open=True),
)


class BIM(IterativeGradient):
    name: ClassVar[str] = "bim"
    display_name: ClassVar[str] = "BIM"
    norm: ClassVar[str] = "linf"
    schema: ClassVar[Schema] = Schema("bim", budget_settings(EPS_LINF, 1.0, "linf") + ITERATIVE)
    iterations: int
    step: float
