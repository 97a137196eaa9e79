"""Random LP instances of the MLA-LP shape for tests and benchmarks.

Rows are heavy-tailed and correlated like real loss Jacobians; b has a few negative entries (the
labels that must cross) and positive slack elsewhere; the optimum z is a few hundredths.
"""

from __future__ import annotations

import math

import numpy as np
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


def regime_instance(l: int = 20, d: int = 27648, attacked: int = 1, active: int = 0, anti: float = 0.0,
                    box: bool = False, saturated: float = 0.0, seed: int = 0, dtype=torch.float64,
                    slack: float = 0.05):
    """An instance of a chosen difficulty (the regimes of ``bench/lp.py --sweep`` and the tests).

    ``attacked`` rows must cross (b < 0). ``active`` of the kept rows are made anti-correlated with
    them (a fraction ``anti`` of the row is minus their mean direction) and given little slack, so
    they are active at the optimum: many active rows are what makes the LP hard. ``box`` adds the
    [0,1] box of an image of which a fraction ``saturated`` of the pixels sit at 0 or 1.
    """
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(l, d, generator=g, dtype=torch.float64) ** 3  # heavy tails, like Jacobians
    rows = rows / rows.abs().sum(1, keepdim=True)
    b = torch.rand(l, generator=g, dtype=torch.float64) * 0.5 + 0.5
    b[:attacked] = -(torch.rand(attacked, generator=g, dtype=torch.float64) * 0.5 + 0.5)
    if active and attacked:
        push = rows[:attacked].mean(0)
        push = push / push.abs().sum()
        for k in range(attacked, min(l, attacked + active)):
            rows[k] = (1 - anti) * rows[k] - anti * push
            rows[k] = rows[k] / rows[k].abs().sum()
            b[k] = slack * float(torch.rand(1, generator=g)) + slack / 5  # little slack: active at the optimum
    scale = (torch.rand(l, 1, generator=g, dtype=torch.float64) + 0.5) * 50.0  # z* a few hundredths
    A = rows * scale * 1e-3
    b = b * 1e-3
    lo = hi = None
    if box:
        x = torch.rand(d, generator=g, dtype=torch.float64)
        sat = torch.rand(d, generator=g) < saturated
        x[sat] = (torch.rand(int(sat.sum()), generator=g) < 0.5).double()
        x = (x * 255).round() / 255
        lo, hi = -x, 1 - x
    return A.to(dtype), b, lo, hi


def anticorrelated_instance(l: int = 20, d: int = 27648, attacked: int = 1, box: bool = False,
                            saturated: float = 0.3, seed: int = 0, dtype=torch.float64, weight: float = 4.0,
                            anti: tuple[float, float] = (0.3, 0.7), tail: float = 1.0):
    """A second family, generated differently from :func:`regime_instance`, so the sweep is not
    tuned to one generator: what real loss Jacobians of a confident multi-label model look like.

    - Heavy-tailed column norms: every pixel has one magnitude shared by all rows (edges and
      textures move every label's loss; flat regions move none), lognormal with spread ``tail``.
    - Kept rows with large weights (``weight`` times the attacked rows' l1 norm, times 0.5-1.5),
      each anti-correlated with the attacked rows (a fraction drawn in ``anti`` of the row is
      minus their mean direction): pushing the attacked labels across pushes the kept ones too,
      so many kept rows are active at the optimum.
    - The kept rows' slack is what a kept label has (b_j of the size of the attacked rows'
      |b|), so it is the large weight that makes them bind, not a contrived small b.
    - ``box``: the [0,1] box of a quantised image of which a fraction ``saturated`` of the pixels
      sit at 0 or 1 (so one side of their box has no room at all).
    """
    g = torch.Generator().manual_seed(seed)
    col = torch.exp(tail * torch.randn(d, generator=g, dtype=torch.float64))  # heavy-tailed pixel magnitudes
    rows = torch.randn(l, d, generator=g, dtype=torch.float64) * col
    rows = rows / rows.abs().sum(1, keepdim=True)
    push = rows[:attacked].mean(0)
    push = push / push.abs().sum()
    a = anti[0] + (anti[1] - anti[0]) * torch.rand(l, generator=g, dtype=torch.float64)
    for k in range(attacked, l):
        rows[k] = (1 - a[k]) * rows[k] - a[k] * push
        rows[k] = rows[k] / rows[k].abs().sum()
    norm = torch.ones(l, 1, dtype=torch.float64)
    norm[attacked:] = weight * (0.5 + torch.rand(l - attacked, 1, generator=g, dtype=torch.float64))
    b = torch.rand(l, generator=g, dtype=torch.float64) * 0.5 + 0.5
    b[:attacked] = -(torch.rand(attacked, generator=g, dtype=torch.float64) * 0.5 + 0.5)
    A = rows * norm * 50.0 * 1e-3  # z* a few hundredths, entries of the size real Jacobians have
    b = b * 1e-3
    lo = hi = None
    if box:
        x = torch.rand(d, generator=g, dtype=torch.float64)
        sat = torch.rand(d, generator=g) < saturated
        x[sat] = (torch.rand(int(sat.sum()), generator=g) < 0.5).double()
        x = (x * 255).round() / 255
        lo, hi = -x, 1 - x
    return A.to(dtype), b, lo, hi


#: What makes the LP hard, one knob at a time (bench/lp.py --sweep and tests/test_lp.py): attacked
#: rows; kept rows with little slack ("tight"), partly anti-correlated with the attacked ones
#: ("anti"); the [0,1] box with saturated pixels. ``active``: "all" or "half" of the kept rows.
#: The last rows are another generator's (``family``), so the solver is not tuned to one.
SWEEP: list[tuple[str, dict]] = [
    ("1 attacked", dict(attacked=1)),
    ("3 attacked", dict(attacked=3)),
    ("5 attacked", dict(attacked=5)),
    ("1 attacked, all kept tight", dict(attacked=1, active="all", anti=0.0, slack=0.01)),
    ("3 attacked, tight, anti 0.2", dict(attacked=3, active="all", anti=0.2, slack=0.02)),
    ("3 attacked, half tight, anti 0.4", dict(attacked=3, active="half", anti=0.4, slack=0.05)),
    ("3 attacked, box, 30% saturated", dict(attacked=3, box=True, saturated=0.3)),
    ("3 attacked, tight, anti 0.2, box", dict(attacked=3, active="all", anti=0.2, slack=0.02, box=True, saturated=0.3)),
    # the second family (anticorrelated_instance): heavy-tailed column norms, every kept row
    # weighing 2-6 times an attacked one and anti-correlated with them
    ("anti kept x4, heavy cols: 1 att", dict(family="anti", attacked=1)),
    ("anti kept x4, heavy cols: 1 att, box", dict(family="anti", attacked=1, box=True, saturated=0.3)),
    ("anti kept x4, heavy cols: 3 att", dict(family="anti", attacked=3)),
    ("anti kept x4, heavy cols: 3 att, box", dict(family="anti", attacked=3, box=True, saturated=0.3)),
]


def sweep_instance(k: int, l: int, d: int, seed: int, dtype=torch.float64):
    """Row k of :data:`SWEEP` at size (l, d)."""
    kw = dict(SWEEP[k][1])
    if kw.pop("family", None) == "anti":
        return anticorrelated_instance(l=l, d=d, seed=seed, dtype=dtype, **kw)
    kept = l - kw["attacked"]
    kw["active"] = {"all": kept, "half": kept // 2}.get(kw.get("active", 0), 0)
    return regime_instance(l=l, d=d, seed=seed, dtype=dtype, **kw)


def brute_line_search(u, v, alpha, gamma, t_max):
    """argmin_{0 <= t <= t_max} f(lam + t d) by evaluating f at every breakpoint (and t_max)."""
    u, v = u.double(), v.double()
    a = torch.ones_like(u) if alpha is None else alpha.double()
    g = torch.ones_like(u) if gamma is None else gamma.double()

    def f(t):
        x = u + t * v
        return float((a * x.clamp(min=0) - g * x.clamp(max=0)).sum())

    tau = -u / v
    ts = tau[(tau > 0) & (tau < t_max)].sort().values
    cands = [0.0] + ts.tolist() + ([t_max] if math.isfinite(t_max) else [])
    vals = [f(t) for t in cands]
    return cands[int(np.argmin(vals))], min(vals), f


def brute_dual_bound(u, c: float, lo=None, hi=None) -> float:
    """The bound a dual point proves, by its definition: the smallest z >= 0 with
    H(z) = sum_i |u_i| min(z, room_i) >= c, room_i = -lo_i where u_i > 0 and hi_i where u_i < 0
    (inf without a box); inf when H never reaches c. H is evaluated by direct sums at the sorted
    breakpoints (a bisection over them), then solved on its linear piece: no cumulative sums."""
    u = np.asarray(torch.as_tensor(u).double().cpu())
    a = np.abs(u)
    if c <= 0.0:
        return 0.0
    if lo is None or hi is None:
        room = np.full_like(a, np.inf)
    else:
        room = np.where(u > 0, -np.asarray(torch.as_tensor(lo).double().cpu()),
                        np.asarray(torch.as_tensor(hi).double().cpu()))

    def H(z: float) -> float:
        return float(np.sum(a * np.minimum(z, room)))

    pts = np.unique(room[np.isfinite(room) & (a > 0) & (room > 0)])
    lo_k, hi_k = -1, len(pts)  # H(pts[lo_k]) < c <= H(pts[hi_k]) (pts[-1] = 0, pts[len] = inf)
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if H(float(pts[mid])) >= c:
            hi_k = mid
        else:
            lo_k = mid
    left = 0.0 if lo_k < 0 else float(pts[lo_k])
    slope = float(a[room > left].sum())  # H's slope just right of `left`
    if slope == 0.0:
        return math.inf
    z = left + (c - H(left)) / slope
    return z if hi_k == len(pts) or z <= float(pts[hi_k]) else float(pts[hi_k])
