"""The structured solver's search: dual Newton on all of A, then on narrowed problems, nested.

Above 50,000 columns the search narrows after a few full iterations: the coordinates far from
their kink keep their sign, so their part of f is one linear column, and Newton goes on over the
others only; one pass checks the signs (see :func:`_search`). A narrowed problem is itself a
structured problem, so it narrows again in turn (d = 602,112: 75,000, then 19,000, then 4,700
columns), each level checking its own signs. The constants below are module attributes on
purpose: the tests and the batched search read them from here.
"""

from __future__ import annotations

import torch

from .dual_newton import _dual_newton, _line_search
from .problem import Scaled
from .solution import _Counter

#: Full Newton iterations before the search narrows to the coordinates near their kink.
_FULL_NEWTON = 4
#: Narrowing pays only when the kept set is much smaller than the problem.
_REDUCE_MIN_N = 50_000
#: The first narrowed set: d / 8 of the columns. On the family with heavy-tailed columns and
#: large anti-correlated kept rows (tests/lp_instances.anticorrelated_instance) the signs that
#: still change after 5 full iterations rank up to d/7..d/4 by nearness to their kink: a set of
#: d/30 flipped half the coordinates and took 6-8 rounds; nesting makes a larger set cheap.
_REDUCE_FRACTION = 8
#: A narrowed problem of at least this many columns narrows again, to a quarter, after
#: :data:`_NESTED_NEWTON` Newton iterations of its own.
_NESTED_MIN_N = 5_000
_NESTED_FRACTION = 4
_NESTED_NEWTON = 3
#: No narrowed set is smaller than this, nor than this many columns per row of A (the tests
#: lower them to make small problems nest).
_MIN_SIZE = 2000
_MIN_PER_ROW = 100
_NESTED_PER_ROW = 250
#: The batched search narrows once (no nesting), to d / 30.
_FLAT_FRACTION = 30
_REDUCE_ROUNDS = 8
_REDUCED_BAND = 200
#: The box's outer loop (one-image and batched) stops once a level's bound exceeds its z by at
#: most this (relative): the finish then closes the rest exactly. At 1e-6 the last level only
#: confirmed the one before (the same bound to 1e-9 on every box regime of the sweep at
#: d = 602,112: ~70 ms each); at 1e-3 the finish took one round as before on 59 of 60 box
#: instances (d = 27,648-268,203).
_BOX_Z_TOL = 1e-3


def _nearest(key: torch.Tensor, size: int) -> torch.Tensor:
    """A mask of about ``size`` coordinates with the smallest key (ties may add a few)."""
    n = key.numel()
    if size >= n:
        return torch.ones(n, dtype=torch.bool, device=key.device)
    if n <= 4 * 65536:
        thr = torch.kthvalue(key, size).values
    else:  # a threshold from an even sample: a kthvalue over all of d = 602k took 2-3 passes' time
        step = n // 65536
        sample = key[::step]
        thr = torch.kthvalue(sample, max(1, min(sample.numel(), size * sample.numel() // n))).values
    return key <= thr


class _Columns:
    """The narrowed problem's matrix in float64: column 0 the far coordinates' aggregated linear
    part, then the narrowed set's columns, in one buffer with room for those that join later (a
    fresh copy per round cost ~2 passes over A at d = 602k)."""

    def __init__(self, P: Scaled, N: torch.Tensor, col: torch.Tensor, al, ga, kappa: float, cs) -> None:
        self.P, self.N, self.al, self.ga, self.kappa, self.cs = P, N, al, ga, kappa, cs
        m, k = P.shape[0], N.numel()
        self.buf = torch.empty(m, k + 1 + max(k // 8, 64), dtype=torch.float64, device=P.device)
        self.buf[:, 0] = col
        self.buf[:, 1:k + 1] = torch.index_select(P.M, 1, N)  # (M[:, N]: 3x as long at d = 602k)
        self.k = k

    def col(self) -> torch.Tensor:
        return self.buf[:, 0]

    def add(self, F: torch.Tensor, cF: torch.Tensor) -> None:
        """Coordinates F (far until now, with linear coefficients cF) join the narrowed set."""
        MF = torch.index_select(self.P.M, 1, F).double()
        self.buf[:, 0] -= MF @ cF
        k, j = self.k, F.numel()
        if k + 1 + j > self.buf.shape[1]:
            grown = torch.empty(self.buf.shape[0], k + 1 + j + max(k // 8, 64), dtype=torch.float64,
                                device=self.buf.device)
            grown[:, :k + 1] = self.buf[:, :k + 1]
            self.buf = grown
        self.buf[:, k + 1:k + 1 + j] = MF
        self.N = torch.cat([self.N, F])
        self.k = k + j

    def problem(self):
        """(the narrowed Scaled problem, its alpha, its gamma)."""
        P, N = self.P, self.N
        one = torch.ones(1, dtype=torch.float64, device=P.device)
        Pr = Scaled(M=self.buf[:, :self.k + 1], inv_norm=P.inv_norm, beta=P.beta, lo=None, hi=None, rows=P.rows,
                    cols=None, row_norm=P.row_norm, s=P.s)
        agg_scale = (self.buf[:, 0] * P.inv_norm).norm().reciprocal().reshape(1)
        Pr.__dict__["_col_scale"] = torch.cat([agg_scale, self.cs[N].double()])
        return Pr, torch.cat([one, self.al[N]]), torch.cat([one * self.kappa, self.ga[N]])


def _search(P: Scaled, lam, alpha, gamma, cnt: _Counter, max_newton: int, band0: int, band_min: int,
            info: dict, full_iterations: int | None = None, narrow: bool = True, depth: int = 0,
            u0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise f from lam: a few Newton iterations on all of P, then Newton on narrowed problems.

    Profile of the hard regimes (kept rows active and anti-correlated with the attacked rows):
    Newton on all d coordinates converges only linearly once its band is at its floor, because
    hundreds of coordinates sit within the dual's error of their kink. Coordinates far from
    their kink keep their sign, so their part of f is linear in lam: aggregated into one column
    (one pass) it leaves a problem of a few of the columns that is exact wherever those signs
    hold (Portnoy and Koenker's "globs" for l1 regression). Newton goes on there (narrowing again
    below it, ``depth`` counting the levels); one pass over P checks the signs, and the few that
    flipped join the narrowed set. "Far" is |u_i| / ||A_i||_2, how far lam must move to flip
    u_i: with heavy-tailed column norms |u_i| alone picked the small columns and missed the large
    ones that flip (the second family: 97-118 passes at d = 100,000 by |u_i|, 28-38 by this).
    ``u0``: A^T lam in the search dtype where the caller has it (the box's next level: a pass saved).
    """
    m, n = P.shape
    # a narrowed problem must keep many columns per dual variable: with l = 80 rows, nesting down
    # to 2,000 columns left ~25 per row; Newton stalled there (4,000 iterations, 10 s at d = 602k)
    reduce = n >= (_REDUCE_MIN_N if depth == 0 else max(_NESTED_MIN_N, _NESTED_PER_ROW * m))
    if depth == 0:
        first = _FULL_NEWTON if full_iterations is None else full_iterations
    else:
        first = _NESTED_NEWTON
    first = min(max_newton, first) if reduce else max_newton
    why: dict = {}
    # In the search dtype (float32 for Jacobians) f cannot resolve the last relative 1e-8..1e-12:
    # before narrowing, only the iteration count ends the full phase (the narrowed levels are
    # float64, where the test works).
    f32 = P.search_dtype != torch.float64 and reduce
    # Before narrowing, the band need not shrink to its floor (the narrowed levels converge): a band
    # of ~n/4000 is found from a sample (1 ms at d = 602k) where a top-k of a few dozen took 2-4 ms.
    floor = max(band_min, n // 4000) if reduce else band_min
    lam, u, it = _dual_newton(P, lam, alpha, gamma, cnt, first, max(band0, floor), floor, None if f32 else 1e-12,
                              why=why, u0=u0)
    if not reduce or not narrow or (it < first and why["stop"] != "no descent"):
        return lam, u, it
    dev = P.device
    if alpha is None:
        al = ga = torch.ones(n, dtype=torch.float64, device=dev)
    else:
        al, ga = alpha.double(), gamma.double()
    sdt = P.search_dtype
    a_s, g_s = (None, None) if alpha is None else (alpha.to(sdt), gamma.to(sdt))
    # The far coordinates' part of f is at least |their linear part| when the weights are
    # symmetric (then the aggregated column weighs 1 both ways), else at least its positive part.
    kappa = 1.0 if alpha is None or bool(torch.equal(alpha, gamma)) else 0.0
    size = max(n // (_REDUCE_FRACTION if depth == 0 else _NESTED_FRACTION), _MIN_SIZE, _MIN_PER_ROW * m)
    cs = P.col_scale()
    inN = _nearest(u.abs() * cs, size)
    red_iters = red_passes = 0
    ref = torch.sign(u)
    fresh = True
    for rnd in range(1, _REDUCE_ROUNDS + 1):
        if fresh:
            ref = torch.sign(u)
            N = inN.nonzero().squeeze(1)
            coef = torch.where(ref > 0, al, -ga).masked_fill_(inN, 0.0)
            col = P.matvec(coef, exact=True) / P.inv_norm  # the far coordinates' linear part, in M's units
            del coef
            cnt.passes += 1
            cnt.exact += 1
            # the narrowed problem: column 0 the far coordinates' aggregated linear part, then the
            # narrowed set's columns, with room for the coordinates that join it later
            red = _Columns(P, N, col, al, ga, kappa, cs)
            fresh = False
        Pr, ar, gr = red.problem()
        cr = _Counter()
        lam_r, _, itr = _search(Pr, lam, ar, gr, cr, 4 * max_newton, max(band_min, Pr.shape[1] // _REDUCED_BAND),
                                band_min, {}, depth=depth + 1)
        red_iters += itr
        red_passes += cr.passes
        u_r = P.rmatvec(lam_r)
        cnt.passes += 1
        flipped = (torch.sign(u_r) * ref < 0).logical_and_(~inN)
        F = flipped.nonzero().squeeze(1)
        nflip = F.numel()
        if nflip == 0:  # the model was exact at its minimiser: that is f's minimiser
            lam, u = lam_r, u_r
            break
        # Move only as far along lam -> lam_r as f itself falls: an exact line search over the
        # narrowed and flipped coordinates, the others' part of the slope (linear: they keep their
        # sign along the segment) being the aggregated column's less the flipped ones'.
        dlam = lam_r - lam
        N = red.N
        idx = torch.cat([N, F])
        uu, vv = u[idx], (u_r[idx] - u[idx])
        cF = torch.where(ref[F] > 0, al[F], -ga[F])
        far_slope = float((dlam * P.inv_norm) @ red.col()) - float(cF @ vv[N.numel():].double())
        t = _line_search(uu, vv, None if a_s is None else a_s[idx], None if g_s is None else g_s[idx], 1.0,
                         extra_slope=far_slope)
        lam = lam + t * dlam
        u = torch.lerp(u, u_r, t)
        if nflip <= size // 4:  # the flipped coordinates join the narrowed set
            red.add(F, cF)
            inN[F] = True
        else:  # very many flipped (a far first guess): a fresh set around the new point
            inN = _nearest(u.abs() * cs, size).logical_or_(flipped)
            fresh = True
    else:
        lam, u, more = _dual_newton(P, lam, alpha, gamma, cnt, max_newton, band_min, band_min)
        it += more
    if depth == 0:
        info["narrowed_rounds"] = info.get("narrowed_rounds", 0) + rnd
        info["narrowed_size"] = int(inN.sum())
        info["narrowed_iterations"] = info.get("narrowed_iterations", 0) + red_iters
        info["narrowed_passes"] = info.get("narrowed_passes", 0) + red_passes
    return lam, u, it + red_iters


def _initial_dual(beta: torch.Tensor) -> torch.Tensor:
    lam = (-beta).clamp(min=0.0)
    return lam / float(-(beta @ lam))
