"""How long an attack will take on this model and device, said before it runs.

The estimate is an upper bound built from the attack's settings and costs measured once per
(model, device): a forward and backward pass (one Adam iteration of the CW family), a Jacobian of
all l outputs (an MLA-LP or ML-DeepFool iteration) and one LP. Early stops (success, the CW
family's early abort) make real runs shorter, often much.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..device import DeviceLike, resolve_device
from .jacobian import batched_jacobian
from .losses import per_label_bce


@dataclass(frozen=True)
class Costs:
    """Seconds per image for the pieces attacks are made of."""

    forward_backward: float
    jacobian: float
    lp: float
    device: str


def _timed(fn: Any, dev: torch.device, repeat: int = 3) -> float:
    """The fastest of ``repeat`` calls after a warm-up: on a shared machine the others measure the
    neighbours (the mean of two swung the same estimate from 4 s to 52 s under load)."""
    fn()  # warm-up (first calls allocate and pick kernels)
    best = float("inf")
    for _ in range(repeat):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_costs(model: Any, device: DeviceLike = None) -> Costs:
    """Time the pieces once on a grey image of the model's size (about a second on the demo models)."""
    from ..lp import solve_linf

    dev = resolve_device(device)
    model = model.to(dev).eval()
    x = torch.full((1, 3, *model.input_size), 0.5, device=dev)
    target = torch.zeros(1, model.num_labels, dtype=torch.bool, device=dev)

    def fwd_bwd() -> None:
        d = x.clone().requires_grad_(True)
        model.probabilities(d).sum().backward()

    def jac() -> Any:
        return batched_jacobian(lambda z: per_label_bce(model(z), target), x)

    fb = _timed(fwd_bwd, dev)
    jt = _timed(jac, dev)
    loss, j = jac()
    b = torch.full((model.num_labels,), -0.1, dtype=torch.float64)
    t0 = time.perf_counter()
    solve_linf(j[0].reshape(model.num_labels, -1), b, tol=1e-6)
    lp = time.perf_counter() - t0
    return Costs(fb, jt, lp, str(dev))


def estimate_seconds(attack: str, settings: dict[str, Any], costs: Costs) -> float:
    """An upper bound on the seconds one image takes under ``settings`` (the schema's keys)."""
    from . import ATTACKS

    if attack == "mla-lp":
        return settings.get("max_iterations", 10) * (costs.jacobian + costs.lp + 2 * costs.forward_backward / 2)
    if attack == "ml-deepfool":
        return settings.get("max_iterations", 20) * (costs.jacobian + costs.forward_backward / 2)
    cls = ATTACKS.get(attack)
    if cls is not None and "eps" in cls.schema:  # the gradient family: a forward + backward per step
        unused = cls.schema.unused({**cls.schema.defaults(), **settings})  # (e.g. restarts without a random start)
        settings = {k: v for k, v in settings.items() if k not in unused}
        steps = settings.get("iterations", cls.schema.defaults().get("iterations", 1)) * max(
            1, settings.get("restarts", 1))
        if settings.get("min_budget"):  # bracketing (eps doubles up to max_eps), then bisection
            eps, top = settings.get("eps", 1.0), settings.get("max_eps", 1.0)
            steps *= max(1, math.ceil(math.log2(max(top / eps, 1.0))) + 1) + settings.get("budget_steps", 6)
        return (steps + 1) * costs.forward_backward
    steps = settings.get("binary_search_steps", 10) * settings.get("max_iterations", 1000)
    return steps * costs.forward_backward


def duration_text(seconds: float) -> str:
    """"40 s", "12 min", "3.5 h"."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
