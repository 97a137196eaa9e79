"""MI-FGSM (Dong et al., CVPR 2018), multi-label: I-FGSM with momentum. Each step accumulates
g <- mu g + grad / ||grad||_1 and moves against sign(g). Distance: l_inf.

Defaults from the paper: decay mu = 1.0, 10 iterations, step eps/10 (so the steps add up to eps).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .gradient import EPS_LINF, IterativeGradient, budget_settings
from .schema import Schema, Setting


class MIFGSM(IterativeGradient):
    name: ClassVar[str] = "mi-fgsm"
    display_name: ClassVar[str] = "MI-FGSM"
    norm: ClassVar[str] = "linf"
    schema: ClassVar[Schema] = Schema("mi-fgsm", budget_settings(EPS_LINF, 1.0, "linf") + (
        Setting("iterations", int, 10, "gradient steps", "iterations", low=1, high=10_000),
        Setting("step", float, 0.1, "the step size as a fraction of eps", "step / eps", low=0.0, high=2.0,
                low_open=True),
        Setting("decay", float, 1.0, "momentum decay mu", "decay", low=0.0, high=10.0),
    ))
    iterations: int
    step: float
    decay: float

    def _direction(self, grad: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        l1 = grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
        g = self.decay * state.get("g", torch.zeros_like(grad)) + grad / l1
        state["g"] = g
        return g.sign()
