"""PGD (Madry et al., ICLR 2018), multi-label, in l_inf and in l_2: projected gradient descent on
the per-label loss toward y* from a random start in the eps-ball, with optional restarts.

l_inf defaults (Madry et al.'s and the common benchmark setting): eps = 8/255, step 2/255 (eps/4),
10 iterations, a uniform random start, 1 restart. l_2 (PGD-l2): the step is the gradient normalised
to unit l_2 length; eps = 0.5 in [0,1] units (the usual CIFAR budget; for 96x96 demo images the
attacks in Table III need l_2 of about 1-3, so use the minimum-budget search), step eps/4,
10 iterations, a random start in the ball.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import torch

from .bim import ITERATIVE
from .gradient import EPS_LINF, IterativeGradient, budget_settings
from .schema import Schema, Setting

RANDOM_START = (
    Setting("random_start", bool, True, "start from a uniform random point of the eps-ball", "random start"),
    Setting("restarts", int, 1, "independent random starts; an example keeps the first that reaches y*",
            "restarts", low=1, high=100, used_when=("random_start", (True,))),
    Setting("seed", int, 0, "seed of the random starts (a run is repeatable)", "seed", low=0, high=2**31 - 1,
            used_when=("random_start", (True,))),
)
PGD_STEPS = (
    Setting("iterations", int, 10, "gradient steps", "iterations", low=1, high=10_000),
    Setting("step", float, 0.25, "the step size as a fraction of eps", "step / eps", low=0.0, high=2.0,
            low_open=True),
)


class _PGDBase(IterativeGradient):
    iterations: int
    step: float
    random_start: bool
    restarts: int
    seed: int

    def _restarts(self) -> int:
        """Without a random start every restart would repeat the first: one (restarts is unused)."""
        return self.restarts if self.random_start else 1

    def _zero_start(self) -> bool:
        return not self.random_start

    def _start(self, x: torch.Tensor, eps: torch.Tensor, restart: int) -> torch.Tensor | None:
        """A uniform random point of each image's eps-ball, drawn from a generator of its own
        seeded by (seed, restart, the image's bytes): an image gets the same start whatever its
        batch or its position in it, and two images do not share one noise pattern."""
        if not self.random_start:
            return None
        u = torch.empty(x.shape, dtype=torch.float32)
        n = torch.empty(x.shape, dtype=torch.float32) if self.norm != "linf" else None
        for i in range(x.shape[0]):
            g = torch.Generator(device="cpu").manual_seed(_example_seed(x[i], self.seed, restart))
            torch.rand(x.shape[1:], generator=g, out=u[i])
            if n is not None:
                torch.randn(x.shape[1:], generator=g, out=n[i])
        u = u.to(x.device, x.dtype)
        e = eps.view(-1, *([1] * (x.dim() - 1)))
        if n is None:
            return (2 * u - 1) * e
        # uniform in the l_2 ball: a Gaussian direction, radius eps * U^(1/d)
        d = x[0].numel()
        n = n.to(x.device, x.dtype)
        n = n / n.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(e)
        return n * e * u.flatten(1)[:, :1].view_as(e) ** (1.0 / d)


def _example_seed(image: torch.Tensor, seed: int, restart: int) -> int:
    """A 63-bit seed from (seed, restart, the image's float32 bytes)."""
    h = hashlib.sha256(f"{seed}/{restart}/".encode())
    h.update(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


class PGD(_PGDBase):
    name: ClassVar[str] = "pgd"
    display_name: ClassVar[str] = "PGD"
    norm: ClassVar[str] = "linf"
    schema: ClassVar[Schema] = Schema("pgd", budget_settings(EPS_LINF, 1.0, "linf") + PGD_STEPS + RANDOM_START)


class PGDL2(_PGDBase):
    name: ClassVar[str] = "pgd-l2"
    display_name: ClassVar[str] = "PGD-l2"
    norm: ClassVar[str] = "l2"
    schema: ClassVar[Schema] = Schema("pgd-l2", budget_settings(0.5, 1000.0, "l2") + PGD_STEPS + RANDOM_START)

    def _direction(self, grad: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        n = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
        return grad / n


__all__ = ["PGD", "PGDL2", "ITERATIVE"]
