"""The structured solver's search: dual Newton on all of A, then on a narrowed problem.

Above 50,000 columns the search narrows after a few full iterations: the coordinates far from
their kink keep their sign, so their part of f is one linear column, and Newton runs to the end
on the ~d/30 others; one pass checks the signs (see :func:`_search`). The constants below are
module attributes on purpose: the tests and the batched search read them from here.
"""

from __future__ import annotations

import torch

from .dual_newton import _dual_newton, _line_search
from .problem import Scaled
from .solution import _Counter

#: Full Newton iterations before the search narrows to the coordinates near their kink.
_FULL_NEWTON = 5
#: Narrowing pays only when the kept set (~d/30) is much smaller than the problem.
_REDUCE_MIN_N = 50_000
_REDUCE_FRACTION = 30
_REDUCE_ROUNDS = 8
_REDUCED_BAND = 200


def _search(P: Scaled, lam, alpha, gamma, cnt: _Counter, max_newton: int, band0: int, band_min: int,
            info: dict, full_iterations: int | None = None, narrow: bool = True,
            ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise f from lam: a few Newton iterations on all of A, then Newton on a narrowed problem.

    Profile of the hard regime (every kept row active, anti-correlated with the attacked rows):
    Newton on all d coordinates converges only linearly once its band is at its floor (f falls
    by ~0.6 per iteration from 1e-5 to 1e-10 relative: 25 iterations, 75 passes), because
    hundreds of coordinates sit within the dual's error of their kink. Coordinates far from
    their kink keep their sign, so their part of f is linear in lam: aggregated into one column
    (one pass) it leaves a problem of ~d/30 columns that is a lower model of f, exact wherever
    those signs hold (Portnoy and Koenker's "globs" for l1 regression). Newton runs to the end
    there at a 30th of the cost; one pass over A checks the signs, and the few that flipped join
    the narrowed set (measured: 2 rounds, 4 passes, instead of ~24 Newton iterations).
    """
    m, n = P.shape
    reduce = n >= _REDUCE_MIN_N
    first = min(max_newton, _FULL_NEWTON if full_iterations is None else full_iterations) if reduce else max_newton
    lam, u, it = _dual_newton(P, lam, alpha, gamma, cnt, first, band0, band_min)
    if not reduce or not narrow or it < first:
        return lam, u, it
    if alpha is None:
        al = ga = torch.ones(n, dtype=torch.float64, device=P.device)
    else:
        al, ga = alpha.double(), gamma.double()
    sdt = P.search_dtype
    a_s, g_s = (None, None) if alpha is None else (alpha.to(sdt), gamma.to(sdt))
    size = max(n // _REDUCE_FRACTION, 2000)
    inN = torch.zeros(n, dtype=torch.bool, device=P.device)
    inN[torch.topk(u.abs(), size, largest=False).indices] = True
    red_iters = red_passes = 0
    for rnd in range(1, _REDUCE_ROUNDS + 1):
        ref = torch.sign(u)
        N = inN.nonzero().flatten()
        coef = torch.where(ref > 0, al, -ga).masked_fill(inN, 0.0)
        col = P.matvec(coef, exact=True) / P.inv_norm  # the far coordinates' linear part, in M's units
        cnt.passes += 1
        Pr = Scaled(M=torch.cat([P.M[:, N].double(), col[:, None]], 1), inv_norm=P.inv_norm, beta=P.beta,
                    lo=None, hi=None, rows=P.rows, cols=None, row_norm=P.row_norm, s=P.s)
        one = torch.ones(1, dtype=torch.float64, device=P.device)
        # the aggregated column counts only while positive: max(0, .) keeps the model below f
        ar, gr = torch.cat([al[N], one]), torch.cat([ga[N], one * 0.0])
        cr = _Counter()
        lam_r, _, itr = _dual_newton(Pr, lam, ar, gr, cr, 4 * max_newton, max(band_min, Pr.shape[1] // _REDUCED_BAND),
                                     band_min)
        red_iters += itr
        red_passes += cr.passes
        u_r = P.rmatvec(lam_r)
        cnt.passes += 1
        flipped = (~inN) & (torch.sign(u_r) * ref < 0)
        if not bool(flipped.any()):  # the model was exact at its minimiser: that is f's minimiser
            lam, u = lam_r, u_r
            break
        # Move only as far along lam -> lam_r as f itself falls (exact line search, no pass: the
        # direction's image is u_r - u), then narrow again around the new point: the flipped
        # coordinates join the set, or, when very many flipped (a far first guess), a fresh set.
        v = u_r - u
        t = _line_search(u, v, a_s, g_s, 1.0)
        lam = lam + t * (lam_r - lam)
        u = u + t * v
        nflip = int(flipped.sum())
        if nflip <= size // 4:
            inN |= flipped
        else:
            inN.zero_()
            inN[torch.topk(u.abs(), size, largest=False).indices] = True
    else:  # the signs kept moving: go on with Newton on all of A from here
        lam, u, more = _dual_newton(P, lam, alpha, gamma, cnt, max_newton, band_min, band_min)
        it += more
    info["narrowed_rounds"] = info.get("narrowed_rounds", 0) + rnd
    info["narrowed_size"] = int(inN.sum())
    info["narrowed_iterations"] = info.get("narrowed_iterations", 0) + red_iters
    info["narrowed_passes"] = info.get("narrowed_passes", 0) + red_passes  # over the narrowed matrix
    return lam, u, it + red_iters


def _initial_dual(beta: torch.Tensor) -> torch.Tensor:
    lam = (-beta).clamp(min=0.0)
    return lam / float(-(beta @ lam))
