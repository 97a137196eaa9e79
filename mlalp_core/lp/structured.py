"""The default backend: an exact solver that exploits l << d.

The LP  min z s.t. A rho <= beta, |rho_i| <= z, lo <= rho <= hi  has only m (<= l) rows, and its
Lagrangian dual has only m variables. At an optimum all but a handful of coordinates sit at
+-min(z, room_i) with the sign -sign((A^T lam)_i). So:

1. **Dual Newton (search).** For a fixed z, minimise the weighted l1 function
   f(lam) = sum_i alpha_i (u_i)_+ + gamma_i (u_i)_-  (u = A^T lam, alpha/gamma = the room capped
   at z) over {lam >= 0, -beta^T lam = 1}: Newton steps on a Huber smoothing whose band (the
   coordinates nearest their kink) shrinks every iteration, a tiny active-set QP for lam >= 0,
   and an exact line search on the true piecewise-linear f. Each iteration costs three passes
   over A. Above 50,000 columns the search narrows after 5 such iterations: the coordinates far
   from their kink keep their sign, so their part of f is one linear column, and Newton runs to
   the end on the ~d/30 others; one pass checks the signs (see :func:`.search._search`). With a box, an
   outer loop raises z to the bound the dual point proves (monotone).
2. **Restricted master (finish).** Coordinates far from their kink are fixed at the value the
   dual says and aggregated into two columns (those at +-z, those at their bound); the few
   near their kink (2m of them at first) stay free. The resulting LP is tiny; HiGHS's dual
   simplex solves it. Its dual point certifies a lower bound on the FULL problem; coordinates
   whose fixed value disagrees with it are freed, and the master is re-solved until the
   certified gap closes.

Everything that touches all d coordinates runs in torch on A's device; only the l x l and
master-sized pieces go to the CPU.

The parts: :mod:`.dual_newton` (Newton at one level z), :mod:`.search` (full, then narrowed),
:mod:`.master` (the restricted LPs), :mod:`.finish` (masters and pricing to a certified gap),
:mod:`.solution` (what every backend returns); here, the solver that runs them in turn.
"""

from __future__ import annotations

import math
import time

from . import search
from .dual_newton import _weights
from .finish import finish
from .problem import Scaled, dual_bound
from .search import _initial_dual, _search
from .solution import _Z_INFEASIBLE, Solution, _Counter


def solve_structured(P: Scaled, tol: float = 1e-9, max_newton: int = 40, max_rounds: int = 30,
                     band_min: int | None = None, master_size: int | None = None) -> Solution:
    """Solve the scaled problem exactly; see the module docstring."""
    beta, lo, hi = P.beta, P.lo, P.hi
    m, n = P.shape
    cnt = _Counter()
    t0 = time.perf_counter()
    info: dict = {}
    band_min = band_min or max(2 * m, 20)
    # A small first master: the masters' own round-off grows with their size (l = 80, d = 602k, "3
    # attacked": 800 columns stopped at a 2.6e-8 gap after 5 rounds, 4.0 s; 160 columns: 1.3e-9 in
    # one round, 1.3 s in all), and the narrowed search leaves few coordinates near their kink.
    master_size = master_size or max(2 * m, 40)
    band0 = max(band_min, n // 200)
    lam = _initial_dual(beta)
    iters = 0

    # ---- 1. search: Newton on the dual (outer loop on z when there is a box) ----
    if lo is None:
        lam, u, it = _search(P, lam, None, None, cnt, max_newton, band0, band_min, info)
        iters += it
        z_lb = dual_bound(P.rmatvec(lam, exact=True), float(-(beta @ lam)), None, None)
        cnt.passes += 1
        if z_lb > _Z_INFEASIBLE:
            return Solution(None, math.inf, lam, "infeasible",
                            f"the rows of A are (nearly) dependent in a way no r can satisfy: ||r||_inf would have to "
                            f"exceed {z_lb * 1.0:.3g} times the scale of the problem", iters, cnt.passes, info)
    else:
        z = 1.0
        z_lb = 0.0
        for outer in range(12):
            alpha, gamma = _weights(z, lo, hi)
            # At the first level z (the scale's bound) the few full Newton iterations only steer: their
            # bound moves z close to z*, where the narrowed search then runs to the end (each later
            # level starts from the last dual point, so it needs no full iteration).
            partial = outer == 0 and n >= search._REDUCE_MIN_N
            lam, u, it = _search(P, lam, alpha, gamma, cnt, max_newton, band0 if outer == 0 else band_min * 4, band_min,
                                  info, None if outer == 0 else 0, narrow=not partial)
            iters += it
            z_lb = dual_bound(P.rmatvec(lam, exact=True), float(-(beta @ lam)), lo, hi)
            cnt.passes += 1
            if math.isinf(z_lb):
                return Solution(None, math.inf, lam, "infeasible",
                                "the box [lo, hi] leaves too little room: no r satisfies A r <= b", iters, cnt.passes, info)
            if not partial and z_lb <= z * (1 + 1e-6):
                break
            z = max(z, z_lb)
    info["search_s"] = time.perf_counter() - t0
    info["newton_iterations"] = iters
    info["search_bound"] = z_lb  # scaled; the finish's master starts from this dual's signs
    return finish(P, lam, u, z_lb, iters, cnt, info, t0, tol, max_rounds, master_size)


__all__ = ["Solution", "finish", "solve_structured"]
