"""Random LP instances of the MLA-LP shape for tests and benchmarks.

Rows are heavy-tailed and correlated like real loss Jacobians; b has a few negative entries (the
labels that must cross) and positive slack elsewhere; the optimum z is a few hundredths.
"""

from __future__ import annotations

import torch


def mlalp_instance(l: int, d: int, n_neg: int = 1, seed: int = 0, box: bool = False,
                   dtype=torch.float64, zstar: float = 0.03):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(l + 4, d, generator=g, dtype=torch.float64) ** 3  # heavy tails
    mix = torch.randn(l, l + 4, generator=g, dtype=torch.float64)  # correlated rows
    A = mix @ base
    b = torch.rand(l, generator=g, dtype=torch.float64) * 2 + 0.1
    neg = torch.randperm(l, generator=g)[: min(n_neg, l)]
    b[neg] = -(torch.rand(len(neg), generator=g, dtype=torch.float64) * 3 + 0.5)
    # scale so that ||A_j||_1 * zstar ~ |b_j|: optimum around zstar
    A = A / A.abs().sum(1, keepdim=True) * (1.5 / zstar) * (torch.rand(l, 1, generator=g, dtype=torch.float64) + 0.5)
    A = A * 1e-3  # entries of the size real Jacobians have
    b = b * 1e-3
    lo = hi = None
    if box:
        x = torch.rand(d, generator=g, dtype=torch.float64)
        x[torch.rand(d, generator=g) < 0.1] = 0.0
        x[torch.rand(d, generator=g) < 0.1] = 1.0
        x = (x * 255).round() / 255
        lo, hi = -x, 1 - x
    return A.to(dtype), b, lo, hi
