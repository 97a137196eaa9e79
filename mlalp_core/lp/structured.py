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
   the end on the ~d/30 others; one pass checks the signs (see :func:`_search`). With a box, an
   outer loop raises z to the bound the dual point proves (monotone).
2. **Restricted master (finish).** Coordinates far from their kink are fixed at the value the
   dual says and aggregated into two columns (those at +-z, those at their bound); the few
   near their kink (2m of them at first) stay free. The resulting LP is tiny; HiGHS's dual
   simplex solves it. Its dual point certifies a lower bound on the FULL problem; coordinates
   whose fixed value disagrees with it are freed, and the master is re-solved until the
   certified gap closes.

Everything that touches all d coordinates runs in torch on A's device; only the l x l and
master-sized pieces go to the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .problem import Scaled, dual_bound, room
from .selection import smallest_crossing
from .tiny_lp import solve_tiny_lp


@dataclass
class Solution:
    rho: torch.Tensor | None
    z: float
    lam: torch.Tensor  # (m,) scaled dual
    status: str  # optimal | infeasible | failed
    message: str
    iterations: int
    passes: int
    info: dict


#: A certified scaled lower bound above this means "infeasible" for practical purposes (rows of A
#: that cancel exactly, with b asking for the impossible).
_Z_INFEASIBLE = 1e12


class _Counter:
    def __init__(self) -> None:
        self.passes = 0


def _weights(z: float, lo, hi):
    """(alpha, gamma): the slopes of f for u > 0 and u < 0 at the level z (None = both z)."""
    if lo is None:
        return None, None
    return (-lo).clamp(max=z), hi.clamp(max=z)


def _fvalue(u, alpha, gamma) -> float:
    if alpha is None:
        return float(u.abs().sum(dtype=torch.float64))
    part = u.clamp(min=0).mul_(alpha)  # one temporary: each costs page faults at this size
    total = float(part.sum(dtype=torch.float64))
    torch.clamp(u, max=0, out=part).mul_(gamma)
    return total - float(part.sum(dtype=torch.float64))


def _newton_direction(g: np.ndarray, H: np.ndarray, beta: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """min g.d + d.H.d/2 s.t. beta.d = 0, d_j >= 0 where lam_j = 0 (active-set on those)."""
    m = g.size
    scale = max(float(np.trace(H)) / m, 1e-300)
    Hr = H + (1e-10 * scale) * np.eye(m)
    at_zero = lam <= 1e-12 * max(float(np.abs(lam).max()), 1e-300)
    fixed = at_zero.copy()
    d = np.zeros(m)
    for _ in range(m + 1):
        F = np.flatnonzero(~fixed)
        k = F.size
        K = np.zeros((k + 1, k + 1))
        K[:k, :k] = Hr[np.ix_(F, F)]
        K[:k, k] = beta[F]
        K[k, :k] = beta[F]
        rhs = np.concatenate([-g[F], [0.0]])
        try:
            sol = np.linalg.solve(K, rhs)
        except np.linalg.LinAlgError:
            sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
        d = np.zeros(m)
        d[F] = sol[:k]
        nu = sol[k]
        W = np.flatnonzero(fixed)
        if W.size == 0:
            break
        eta = g[W] + Hr[W] @ d + nu * beta[W]
        worst = int(np.argmin(eta))
        if eta[worst] >= -1e-12 * (np.abs(g).max() + 1e-300):
            break
        fixed[W[worst]] = False
    return d


def _line_search(u, v, alpha, gamma, t_max: float) -> float:
    """argmin_{0 <= t <= t_max} f(lam + t d), exactly (f is convex piecewise linear in t).

    This runs every Newton iteration over all d coordinates, so it avoids temporaries (each
    fresh d-sized tensor costs ~1-1.5 ms of page faults at d = 602k): the slope at a trial t is
    a few in-place operations on one buffer, a handful of trial t's bracket the minimiser, and
    only the breakpoints inside the bracket are gathered (gathering every sign change, ~d/2 of
    them, cost ~27 ms, 4-5 passes over A).
    """
    # Coordinate i adds grow_i |v_i| to the slope while u_i + t v_i moves away from 0 (same sign
    # as v_i; at 0, the side v_i points to) and -shrink_i |v_i| while it moves towards 0.
    av = v.abs()
    if alpha is None:
        c, shrink_sum = 2.0 * av, float(av.sum(dtype=torch.float64))
    else:
        vpos = v > 0
        shrink = torch.where(vpos, gamma, alpha).mul_(av)
        c = torch.where(vpos, alpha, gamma).mul_(av).add_(shrink)
        shrink_sum = float(shrink.sum(dtype=torch.float64))
        del shrink, vpos
    buf = torch.empty_like(u)
    half_sum = 0.5 * float(c.sum(dtype=torch.float64))

    def slope(t: float) -> float:
        # sign(x v) is +1 while moving away from 0, -1 towards it; slope = sum c (sign + 1) / 2 - shrink
        torch.add(u, v, alpha=t, out=buf)
        buf.mul_(v).sign_().mul_(c)
        return 0.5 * float(buf.sum(dtype=torch.float64)) + half_sum - shrink_sum

    slope0 = slope(0.0)
    kink = u == 0  # at a kink the step moves away from 0 whichever way it goes: count it whole
    if bool(kink.any()):
        slope0 += 0.5 * float(c[kink].sum(dtype=torch.float64))
    if slope0 >= 0.0:
        return 0.0
    t_lo, s_lo = 0.0, slope0
    t_hi = min(t_max, 1.0)
    for _ in range(8):
        s_hi = slope(t_hi)
        if s_hi >= 0.0:
            break
        if t_hi >= t_max:
            return t_max
        t_lo, s_lo = t_hi, s_hi
        t_hi = min(t_max, t_hi * 16.0)
    else:
        t_hi = math.inf
    for _ in range(3 if math.isfinite(t_hi) else 0):  # narrow the bracket geometrically
        t_mid = math.sqrt(t_lo * t_hi) if t_lo > 0 else t_hi / 16.0
        s_mid = slope(t_mid)
        if s_mid >= 0.0:
            t_hi = t_mid
        else:
            t_lo, s_lo = t_mid, s_mid
    torch.div(u, v, out=buf).neg_()  # the breakpoints tau_i = -u_i / v_i (nan/inf where v_i = 0)
    cand = buf > t_lo
    if math.isfinite(t_hi):
        cand &= buf <= t_hi
    idx = cand.nonzero().squeeze(1)
    t = smallest_crossing(buf[idx], c[idx], None, -s_lo, clean=True, check=False)
    return max(t_lo, min(t, t_max, t_hi))


def _dual_newton(P: Scaled, lam, alpha, gamma, cnt: _Counter, max_iter: int, band0: int, band_min: int,
                 ftol: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise f over {lam >= 0, -beta.lam = 1} from lam; returns (lam, u = A^T lam, iterations).

    Passes over A run in A's own dtype (float32 for Jacobians): this phase only steers; the
    finish and the certificate are float64.
    """
    m, n = P.shape
    beta = P.beta
    beta_np = beta.cpu().numpy()
    sdt = P.search_dtype
    if alpha is not None:
        alpha, gamma = alpha.to(sdt), gamma.to(sdt)
    u = P.rmatvec(lam)
    cnt.passes += 1
    f = _fvalue(u, alpha, gamma)
    band = min(band0, n)
    it = 0
    for it in range(1, max_iter + 1):
        absu = u.abs()
        k = max(min(band, n), 1)
        vals, S = torch.topk(absu, k, largest=False)
        mu = float(vals.max())
        if mu <= 0.0:
            mu = float(absu.max()) * 1e-12 + 1e-300
        if alpha is None:
            psi = torch.sign(u)
            psi[S] = (u[S] / mu).clamp(-1.0, 1.0)
            wS = torch.full((k,), 1.0 / mu, dtype=torch.float64, device=P.device)
        else:
            psi = torch.where(u > 0, alpha, -gamma)
            aS, gS = alpha[S], gamma[S]
            psi[S] = torch.minimum(torch.maximum(-gS + (aS + gS) * (u[S] + mu) / (2 * mu), -gS), aS)
            wS = ((aS + gS) / (2 * mu)).double()
        g = P.matvec(psi).double()
        cnt.passes += 1
        AS = P.columns(S)
        H = (AS * wS) @ AS.t()
        d = _newton_direction(g.cpu().numpy(), H.cpu().numpy(), beta_np, lam.cpu().numpy())
        if not np.isfinite(d).all() or np.abs(d).max() == 0.0:
            break
        d_t = torch.from_numpy(d).to(P.device)
        neg = d_t < 0
        t_max = float((lam[neg] / -d_t[neg]).min()) if bool(neg.any()) else math.inf
        v = P.rmatvec(d_t)
        cnt.passes += 1
        t = _line_search(u, v, alpha, gamma, t_max)
        if t <= 0.0:
            if band <= band_min:
                break
            band = max(band_min, band // 4)
            continue
        lam = lam + t * d_t
        if t >= t_max:  # a bound blocked the step: the blocking duals are exactly 0 from now on, else
            # they stay ~1e-17 above it, the next direction pushes them down again and Newton
            # stalls on steps of that length (measured: 2.4 % from the optimum, thousands of wrong signs)
            lam[neg & (lam <= 1e-12 * float(lam.abs().max()))] = 0.0
        lam = lam.clamp(min=0.0)
        lam = lam / float(-(beta @ lam))  # stay exactly on -beta.lam = 1
        u = P.rmatvec(lam)
        cnt.passes += 1
        f_new = _fvalue(u, alpha, gamma)
        done = band <= band_min and (f - f_new) <= ftol * abs(f)
        f = f_new
        band = max(band_min, band // 3)
        if done:
            break
    return lam, u, it


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


def _master(P: Scaled, u, z_est, K, cnt: _Counter, elastic: bool):
    """Solve the restricted LP; returns (rho, z, lam, status, slack) with rho on A's device."""
    beta, lo, hi = P.beta, P.lo, P.hi
    m, n = P.shape
    dev = P.device
    u = u.double()
    sigma = -torch.sign(u)
    rm = room(u, lo, hi)
    inK = torch.zeros(n, dtype=torch.bool, device=dev)
    inK[K] = True
    zgrp = (~inK) & (rm >= z_est)
    bgrp = (~inK) & (rm < z_est)
    vz = torch.where(zgrp, sigma, torch.zeros_like(sigma))
    vb = torch.where(bgrp, sigma * torch.where(bgrp, rm, torch.zeros_like(rm)), torch.zeros_like(sigma))
    cols = P.matvec(torch.stack([vz, vb], 1), exact=True)  # (m, 2): one pass
    cnt.passes += 1
    c_z, c_b = cols[:, 0], cols[:, 1]
    has_z = bool(zgrp.any())
    has_b = bool(bgrp.any())
    rho_lo = float(rm[zgrp].min()) if has_z else math.inf
    rho_hi = float(rm[bgrp].max()) if has_b else 0.0

    AK = P.columns(K).cpu().numpy()
    k = AK.shape[1]
    # variable order: z, r_K (k), [w], [theta], [e (m)]
    nv = 1 + k + int(has_z) + int(has_b) + (m if elastic else 0)
    iw = 1 + k
    it = iw + int(has_z)
    ie = it + int(has_b)
    blocks_rows, blocks_cols, blocks_vals = [], [], []

    def add(rows, cols_, vals):
        blocks_rows.append(np.asarray(rows).ravel())
        blocks_cols.append(np.asarray(cols_).ravel())
        blocks_vals.append(np.asarray(vals, dtype=np.float64).ravel())

    rr, cc = np.meshgrid(np.arange(m), np.arange(1, 1 + k), indexing="ij")
    add(rr, cc, AK)
    if has_z:
        add(np.arange(m), np.full(m, iw), c_z.cpu().numpy())
    if has_b:
        add(np.arange(m), np.full(m, it), c_b.cpu().numpy())
    if elastic:
        add(np.arange(m), ie + np.arange(m), -np.ones(m))
    row = m
    # r_i - z <= 0 and -r_i - z <= 0
    idx = np.arange(k)
    add(row + idx, 1 + idx, np.ones(k))
    add(row + idx, np.zeros(k, int), -np.ones(k))
    row += k
    add(row + idx, 1 + idx, -np.ones(k))
    add(row + idx, np.zeros(k, int), -np.ones(k))
    row += k
    if has_z:
        add([row, row], [iw, 0], [1.0, -1.0])
        row += 1
    if has_b:
        add([row, row], [it, 0], [rho_hi, -1.0])
        row += 1
    A_ub = sp.csr_matrix((np.concatenate(blocks_vals), (np.concatenate(blocks_rows), np.concatenate(blocks_cols))),
                         shape=(row, nv))
    b_ub = np.zeros(row)
    b_ub[:m] = beta.cpu().numpy()
    c = np.zeros(nv)
    c[0] = 1.0
    if elastic:
        c[ie:] = 1e6
    col_lo = np.full(nv, -np.inf)
    col_hi = np.full(nv, np.inf)
    col_lo[0] = 0.0
    if lo is not None and hi is not None:
        col_lo[1:1 + k] = lo[K].cpu().numpy()
        col_hi[1:1 + k] = hi[K].cpu().numpy()
    if has_z:
        col_lo[iw], col_hi[iw] = 0.0, rho_lo
    if has_b:
        col_lo[it], col_hi[it] = 0.0, 1.0
    if elastic:
        col_lo[ie:] = 0.0
    res = solve_tiny_lp(c, A_ub, np.full(row, -np.inf), b_ub, col_lo, col_hi)
    if res.status == "infeasible":
        return None, math.inf, None, "infeasible", 0.0
    if res.status != "optimal":
        return None, math.inf, None, f"failed: {res.message}", 0.0
    x, row_dual = res.x, res.row_dual
    assert x is not None and row_dual is not None  # an optimal tiny LP has both
    lam = torch.from_numpy(-row_dual[:m]).to(dev).clamp(min=0.0)
    rho = torch.zeros(n, dtype=torch.float64, device=dev)
    if has_z:
        rho = torch.where(zgrp, sigma * x[iw], rho)
    if has_b:
        rho = torch.where(bgrp, sigma * rm * x[it], rho)
    rho[K] = torch.from_numpy(x[1:1 + k]).to(dev)
    slack = float(np.sum(x[ie:])) if elastic else 0.0
    return rho, float(x[0]), lam, "optimal", slack


def _cancelling_rows(P: Scaled) -> torch.Tensor | None:
    """lam >= 0 with A^T lam ~ 0 and beta.lam < 0 (the problem is then infeasible), or None.

    Such a lam lies in the null space of the l x l Gram matrix A A^T; a tiny LP over that space
    finds one with beta.lam < 0 if it exists. It counts only if it proves z > _Z_INFEASIBLE.
    """
    beta = P.beta
    G = P.gram().cpu().numpy()
    w, V = np.linalg.eigh(G)
    N = V[:, w <= 1e-13 * max(w.max(), 1e-300)]
    if N.shape[1] == 0:
        return None
    m, k = N.shape
    # min beta.N c  s.t.  N c >= 0, sum(N c) = 1
    bn = beta.cpu().numpy() @ N
    res = solve_tiny_lp(bn, np.vstack([N, N.sum(0, keepdims=True)]), np.r_[np.zeros(m), 1.0],
                        np.r_[np.full(m, np.inf), 1.0], np.full(k, -np.inf), np.full(k, np.inf))
    if res.status != "optimal":
        return None
    lam = torch.from_numpy(np.clip(N @ res.x, 0.0, None)).to(P.device)
    c = float(-(beta @ lam))
    if c <= 0 or float(P.rmatvec(lam, exact=True).abs().sum()) * _Z_INFEASIBLE > c:
        return None
    return lam


#: A certified relative gap this small is what float64 sums over d ~ 1e5-1e6 terms can resolve:
#: the finish stops there (reporting the gap) rather than growing its master without end.
_GAP_FLOOR = 1e-8
#: When the certified gap stops shrinking (three rounds without 1 % progress) below this, the
#: answer is as exact as the data allow (float32 Jacobians: ~1e-7): stop and report the gap.
_STALL_GAP = 1e-6


def _best_response(P: Scaled, u, z, rho_master):
    """r_i = -sign(u_i) min(z, room_i) off the kinks (master's values, clipped, on them), if feasible."""
    lo, hi = P.lo, P.hi
    kink = u.abs() <= 1e-13 * float(u.abs().max())
    rho = -torch.sign(u) * torch.clamp(room(u, lo, hi), max=z)
    rho = torch.where(kink, rho_master.clamp(-z, z), rho)
    if lo is not None and hi is not None:
        rho = torch.minimum(torch.maximum(rho, lo), hi)
    if float((P.matvec(rho, exact=True) - P.beta).max()) > 1e-13:
        return None
    return rho


def _finish_info(info: dict, rnd: int, K: torch.Tensor, t0: float, z: float) -> None:
    info["rounds"] = rnd
    info["master_size"] = int(K.numel())
    info["time_s"] = time.perf_counter() - t0
    # how far the search's certificate was from the optimum: the finish's cost grows with it
    info["search_gap"] = (z - info["search_bound"]) / max(z, 1e-300)


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
            partial = outer == 0 and n >= _REDUCE_MIN_N
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


def finish(P: Scaled, lam: torch.Tensor, u: torch.Tensor, z_lb: float, iters: int, cnt: _Counter, info: dict,
           t0: float, tol: float = 1e-9, max_rounds: int = 30, master_size: int | None = None) -> Solution:
    """The exact finish from a search's dual point (lam, u = Ah^T lam, its bound z_lb): restricted
    masters and pricing until the certified gap closes. Shared by the one-image and the batched
    search (:mod:`.batched`), so both end on the same certificates."""
    beta, lo, hi = P.beta, P.lo, P.hi
    m, n = P.shape
    master_size = master_size or max(2 * m, 40)
    k0 = min(master_size, n)
    K = torch.topk(u.abs(), k0, largest=False).indices
    z_est = max(z_lb, 1.0)
    # the search's dual point is a certificate too (often the best one: the masters' duals are
    # only as exact as their few free columns allow)
    best = (z_lb, lam) if 0.0 < z_lb < math.inf else None
    best_primal: tuple[float, torch.Tensor] | None = None
    elastic = False
    gap = math.inf
    gaps: list[float] = []
    for rnd in range(1, max_rounds + 1):
        rho, z_m, lam_m, status, slack = _master(P, u, z_est, K, cnt, elastic)
        if status == "infeasible" and not elastic:
            elastic = True
            continue
        if status != "optimal":
            return Solution(None, math.inf, lam, "failed", f"restricted LP {status}", iters + rnd, cnt.passes, info)
        u_m = P.rmatvec(lam_m, exact=True)
        cnt.passes += 1
        c_m = float(-(beta @ lam_m))
        lb = dual_bound(u_m, c_m, lo, hi)
        if elastic and slack > 1e-9:
            if lb > _Z_INFEASIBLE:
                return Solution(None, math.inf, lam_m, "infeasible",
                                "no r satisfies A r <= b within the box (certified)", iters + rnd, cnt.passes, info)
        elif best is None or lb > best[0]:
            best = (lb, lam_m)
        if slack <= 1e-9 and not math.isinf(lb) and lb > 0:
            # The best response to the master's dual, at the bound it proves, is often feasible
            # already: then it is optimal (its z equals a certified lower bound). This catches the
            # master's own round-off, which leaves coordinates with tiny reduced costs unmoved.
            rho_br = _best_response(P, u_m, lb, rho)
            cnt.passes += 1
            if rho_br is not None:
                z_br = float(rho_br.abs().max())
                if z_br < z_m:
                    rho, z_m = rho_br, z_br
        if slack <= 1e-9:
            assert best is not None  # set above whenever the master is feasible
            if best_primal is None or z_m < best_primal[0]:
                best_primal = (z_m, rho)
            else:  # a larger master can come back a hair worse (its own tolerances): keep the best point
                z_m, rho = best_primal
            gap = (z_m - best[0]) / max(z_m, 1e-300)
            if gap <= tol:
                _finish_info(info, rnd, K, t0, z_m)
                return Solution(rho, z_m, best[1], "optimal", "optimal (certified)", iters + rnd, cnt.passes, info)
            if gap <= _GAP_FLOOR:
                # The gap is at the precision floor of the masters and of float64 sums over d terms
                # (float32 data: ~1e-8): more rounds only grow the master for no better answer
                # (measured: 45 s instead of 0.02 s at d = 27,648, and a hang on tight instances).
                _finish_info(info, rnd, K, t0, z_m)
                return Solution(rho, z_m, best[1], "optimal", f"optimal to the data's precision (certified gap "
                                f"{gap:.2g}, asked {tol:.2g})", iters + rnd, cnt.passes, info)
            z_est = z_m
        # pricing: coordinates whose fixed value disagrees with the best response to lam_m
        sigma_new = -torch.sign(u_m)
        rm_new = room(u_m, lo, hi)
        inK = torch.zeros(n, dtype=torch.bool, device=P.device)
        inK[K] = True
        sigma_old = -torch.sign(u).double()
        rm_old = room(u.double(), lo, hi)
        z_ref = z_m if slack <= 1e-9 else z_est
        wrong_sign = (sigma_new != sigma_old) & (u_m != 0)
        type_old = rm_old >= z_est
        type_new = rm_new >= z_ref
        wrong = (~inK) & (wrong_sign | (type_old != type_new))
        nwrong = int(wrong.sum())
        if slack <= 1e-9:
            gaps.append(gap)
        stalled = len(gaps) >= 3 and min(gaps[-3:]) >= 0.99 * gaps[-3]  # no progress in three rounds
        if slack <= 1e-9 and best is not None and stalled and gap <= _STALL_GAP:
            # no progress in three rounds at a gap float32 data cannot resolve: say what was reached
            _finish_info(info, rnd, K, t0, z_m)
            return Solution(rho, z_m, best[1], "optimal", f"optimal to the data's precision (certified gap "
                            f"{gap:.2g}, asked {tol:.2g})", iters + rnd, cnt.passes, info)
        if nwrong == 0:
            # nothing to price in: widen the free set around the kinks instead
            extra = torch.topk(u_m.abs().masked_fill(inK, math.inf), min(K.numel(), n - K.numel()), largest=False).indices
            if extra.numel() == 0:
                break
            K = torch.cat([K, extra])
            continue
        score = (u_m.abs() * torch.minimum(rm_new, torch.full_like(rm_new, z_ref))).masked_fill(~wrong, -1.0)
        add = torch.topk(score, min(nwrong, max(2 * master_size, 1000))).indices
        K = torch.cat([K, add])
    if elastic and lo is None:
        # The masters stayed infeasible: look for rows of A that cancel (a Farkas certificate).
        lam_f = _cancelling_rows(P)
        if lam_f is not None:
            return Solution(None, math.inf, lam_f, "infeasible",
                            "the rows of A cancel in a way no r can satisfy (certified)", iters, cnt.passes, info)
    gap_msg = "" if best is None else f" (best certified lower bound {best[0]:.6g})"
    if best is not None and rho is not None and slack <= 1e-9:
        return Solution(rho, z_m, best[1], "optimal", "stopped at the round limit; gap not closed" + gap_msg,
                        iters + max_rounds, cnt.passes, info)
    return Solution(None, math.inf, lam, "failed", "the exact solver did not converge" + gap_msg, iters, cnt.passes, info)
