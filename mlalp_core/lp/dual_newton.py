"""The structured solver's dual Newton method at one level z of the box.

It minimises the weighted l1 function f(lam) = sum_i alpha_i (u_i)_+ + gamma_i (u_i)_-
(u = A^T lam, alpha/gamma = the room capped at z) over {lam >= 0, -beta^T lam = 1}: Newton
steps on a Huber smoothing whose band (the coordinates nearest their kink) shrinks every
iteration, a tiny active-set QP for lam >= 0 (:func:`_newton_direction`), and an exact line
search on the true piecewise-linear f (:func:`_line_search`). Each iteration costs three passes
over A.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .problem import Scaled
from .selection import smallest_crossing
from .solution import _Counter


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
