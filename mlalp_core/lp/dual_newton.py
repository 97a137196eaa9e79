"""The structured solver's dual Newton method at one level z of the box.

It minimises the weighted l1 function f(lam) = sum_i alpha_i (u_i)_+ + gamma_i (u_i)_-
(u = A^T lam, alpha/gamma = the room capped at z) over {lam >= 0, -beta^T lam = 1}: Newton
steps on a Huber smoothing whose band (the coordinates nearest their kink) shrinks every
iteration, a tiny active-set QP for lam >= 0 (:func:`_newton_direction`), and an exact line
search on the true piecewise-linear f (:func:`_line_search`). Each iteration costs two passes
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


def _fvalue(u, alpha, gamma, sums=None) -> float:
    """f = sum alpha (u)_+ + gamma (u)_- = (|u|.(alpha + gamma) + u.(alpha - gamma)) / 2, summed in
    float64 (its decrease decides when Newton stops): a few operations on one temporary (each
    fresh d-sized tensor costs page faults at this size)."""
    if alpha is None:
        return float(u.abs().sum(dtype=torch.float64))
    w, dl = sums if sums is not None else _sums(alpha, gamma)
    if u.dtype == torch.float64:
        return 0.5 * (float(torch.dot(u.abs(), w)) + float(torch.dot(u, dl)))
    part = u.abs().mul_(w)
    total = float(part.sum(dtype=torch.float64))
    return 0.5 * (total + float(torch.mul(u, dl, out=part).sum(dtype=torch.float64)))


def _sums(alpha, gamma):
    """(alpha + gamma, alpha - gamma): what the slope of f and f itself are dot products with."""
    return alpha + gamma, alpha - gamma


def _newton_direction(g: np.ndarray, H: np.ndarray, beta: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """min g.d + d.H.d/2 s.t. beta.d = 0, d_j >= 0 where lam_j = 0 (active-set on those)."""
    m = g.size
    scale = max(float(np.trace(H)) / m, 1e-300)
    Hr = H.copy()
    Hr.flat[::m + 1] += 1e-10 * scale
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


def _line_search(u, v, alpha, gamma, t_max: float, sums=None, extra_slope: float = 0.0) -> float:
    """argmin_{0 <= t <= t_max} f(lam + t d), exactly (f is convex piecewise linear in t).

    This runs every Newton iteration over all d coordinates, so each trial step costs three
    in-place operations on one buffer: off its breakpoints the slope is
    ``(alpha - gamma).v / 2 + sign(u + t v).((alpha + gamma) v) / 2``, a sign and a dot product
    (the previous form, five operations and a float64 sum per trial, was half of a full Newton
    iteration at d = 602k). Above 65,536 coordinates a sample of the breakpoints places two
    trials either side of the minimiser (:class:`_Sample`), then only the breakpoints inside the
    bracket are gathered and sorted (gathering every sign change, ~d/2 of them, cost ~27 ms,
    4-5 passes over A). ``extra_slope``: a constant added to the slope (the narrowed search's
    far coordinates, linear along the step).
    """
    if alpha is None:
        D, const, half = v, extra_slope, 1.0  # slope = sign(u + t v).v
    else:
        w, dl = sums if sums is not None else _sums(alpha, gamma)
        D, const, half = w * v, 0.5 * float(torch.dot(dl, v)) + extra_slope, 0.5
    buf = torch.empty_like(u)

    def slope(t: float) -> float:
        torch.add(u, v, alpha=t, out=buf).sign_()
        return const + half * float(torch.dot(buf, D))

    torch.sign(u, out=buf)
    slope0 = const + half * float(torch.dot(buf, D))
    if float(torch.dot(buf, buf)) < buf.numel():  # sign(u_i) = 0 somewhere: a coordinate at its kink
        # moves away from 0 whichever way the step goes: count it whole
        kink = u == 0
        slope0 += half * float(D[kink].abs().sum(dtype=torch.float64))
    if slope0 >= 0.0:
        return 0.0
    t_lo, s_lo = 0.0, slope0
    t_hi, s_hi = math.inf, math.nan
    sample = _Sample(u, v, D, 2.0 * half, t_max) if u.numel() >= _SAMPLED_N else None
    if sample is not None:
        # where the slope crosses 0 among an even sample of the breakpoints: trials just either
        # side of that estimate bracket the minimiser tightly even when the slope is far from
        # linear (the first step from the initial dual at d = 602k crossed 200,000 breakpoints
        # within 2 % of its length; regula falsi alone left 180,000 to sort)
        for t_mid in sample.straddle(-slope0):
            if not t_lo < t_mid < t_hi:
                continue
            s_mid = slope(t_mid)
            if s_mid >= 0.0:
                t_hi, s_hi = t_mid, s_mid
            else:
                t_lo, s_lo = t_mid, s_mid
    if math.isinf(t_hi):  # not bracketed yet: trial steps 1, 16, 256, ... (beyond t_lo), capped at t_max
        t_try = min(t_max, 1.0 if t_lo < 1.0 else 16.0 * t_lo)
        for _ in range(8):
            if t_try <= t_lo:
                return t_max
            s_try = slope(t_try)
            if s_try >= 0.0:
                t_hi, s_hi = t_try, s_try
                break
            if t_try >= t_max:
                return t_max
            t_lo, s_lo = t_try, s_try
            t_try = min(t_max, t_try * 16.0)
    if math.isfinite(t_hi) and sample is not None:
        # regula falsi (Illinois: an end kept twice has its weight halved) while the bracket holds
        # more breakpoints than a sort of them would cost (the sample says how many); on a small
        # problem sorting the bracket is always cheaper
        w_lo, w_hi, kept = s_lo, s_hi, 0
        for _ in range(6):
            if sample.count(t_lo, t_hi) <= _SORT_CHEAPER:
                break
            width = t_hi - t_lo
            # the chord in the coordinates of the sampled rise (linear in t only where the jumps
            # are even: they are heavy-tailed), else in t
            t_mid = sample.interpolate(t_lo, t_hi, (-w_lo) / (w_hi - w_lo))
            if not t_lo < t_mid < t_hi:
                t_mid = t_lo + width * (-w_lo) / (w_hi - w_lo)
            t_mid = min(max(t_mid, t_lo + 1e-3 * width), t_hi - 1e-3 * width)
            s_mid = slope(t_mid)
            if s_mid >= 0.0:
                t_hi, s_hi, w_hi = t_mid, s_mid, s_mid
                w_lo, kept = (w_lo * 0.5 if kept == -1 else w_lo), -1
            else:
                t_lo, s_lo, w_lo = t_mid, s_mid, s_mid
                w_hi, kept = (w_hi * 0.5 if kept == 1 else w_hi), 1
    torch.div(u, v, out=buf).neg_()  # the breakpoints tau_i = -u_i / v_i (nan/inf where v_i = 0)
    cand = buf > t_lo
    if math.isfinite(t_hi):
        cand &= buf <= t_hi
    idx = cand.nonzero().squeeze(1)
    jump = D[idx].abs_().mul_(2.0 * half)  # the slope rises by (alpha + gamma)|v_i| at tau_i
    t = smallest_crossing(buf[idx], jump, None, -s_lo, clean=True, check=False)
    return max(t_lo, min(t, t_max, t_hi))


#: Above this many coordinates the line search brackets its minimiser from a sample first.
_SAMPLED_N = 1 << 16
#: Breakpoints the line search sorts rather than narrowing its bracket by another trial step.
_SORT_CHEAPER = 8_000


class _Sample:
    """Every k-th breakpoint in (0, t_max] (~8,000 of them), sorted, with the slope's rise over
    them: where the slope crosses 0, and how many breakpoints a bracket holds, estimated."""

    def __init__(self, u, v, D, scale: float, t_max: float) -> None:
        self.step = step = u.numel() // 8192
        tau = (u[::step] / v[::step]).neg_()
        inside = (tau > 0) & (tau <= t_max)
        ts = tau[inside]
        order = torch.argsort(ts)
        self.ts = ts[order].double()
        self.rise = (D[::step][inside][order].abs() * (scale * step)).double().cumsum(0)

    def straddle(self, need: float) -> tuple[float, ...]:
        """Trial steps just below and just above where the slope has risen by ``need`` (an
        estimate from ~8,000 breakpoints is off by ~0.5 %; with few below it, a step past a few
        more of them, so that the bracket left to sort is small)."""
        n = self.ts.numel()
        if n == 0:
            return ()
        ends = torch.searchsorted(self.rise, torch.tensor([0.97 * need, 1.03 * need], dtype=torch.float64,
                                                          device=self.rise.device)).tolist()
        a, b = ends
        if a >= n:  # the sample never rises that far: no estimate
            return ()
        if a < 32:
            b = max(b, 8)
            return (float(self.ts[b]),) if b < n else ()
        return (float(self.ts[a]),) + ((float(self.ts[b]),) if b < n else ())

    def interpolate(self, lo: float, hi: float, frac: float) -> float:
        """The step where the sampled rise has gone ``frac`` of its way from ``lo`` to ``hi``."""
        i, j = torch.searchsorted(self.ts, torch.tensor([lo, hi], dtype=torch.float64, device=self.ts.device),
                                  right=True).tolist()
        if j <= i:
            return math.nan
        base = float(self.rise[i - 1]) if i > 0 else 0.0
        goal = base + frac * (float(self.rise[j - 1]) - base)
        k = int(torch.searchsorted(self.rise[i:j], torch.tensor([goal], dtype=torch.float64, device=self.ts.device)))
        return float(self.ts[min(i + k, j - 1)])

    def count(self, lo: float, hi: float) -> int:
        """About how many breakpoints lie in (lo, hi]."""
        ends = torch.searchsorted(self.ts, torch.tensor([lo, hi], dtype=torch.float64, device=self.ts.device),
                                  right=True).tolist()
        return (ends[1] - ends[0]) * self.step


def _dual_newton(P: Scaled, lam, alpha, gamma, cnt: _Counter, max_iter: int, band0: int, band_min: int,
                 ftol: float | None = 1e-12, why: dict | None = None, u0: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise f over {lam >= 0, -beta.lam = 1} from lam; returns (lam, u = A^T lam, iterations).

    It stops when f falls by less than ``ftol`` (relative) with the band at its floor; ``None``
    turns that test off, for float32 data whose f cannot resolve such a fall (summed from a u
    with float32 round-off, it can rise from one iteration to the next while the dual still
    improves: on "1 attacked, all kept tight" at d = 100,000 it stopped 1.3e-8 from the optimum,
    and the finish needed 4 rounds). ``why["stop"]`` says why it stopped: "stationary" (no
    Newton direction), "no descent" (no step along it), "converged" (the ftol test) or "limit".
    ``u0``: A^T lam, where the caller has it.

    Passes over A run in A's own dtype (float32 for Jacobians): this phase only steers; the
    finish and the certificate are float64. Two passes per iteration: A psi for the gradient
    and A^T d for the line search; u = A^T lam then moves along with lam (u + t A^T d), and is
    recomputed every few iterations so that float32 round-off cannot pile up.
    """
    m, n = P.shape
    beta = P.beta
    beta_np = beta.cpu().numpy()
    sdt = P.search_dtype
    sums = None
    if alpha is not None:
        alpha, gamma = alpha.to(sdt), gamma.to(sdt)
        sums = _sums(alpha, gamma)
        half_w, half_dl = 0.5 * sums[0], 0.5 * sums[1]
    if u0 is None:
        u = P.rmatvec(lam)
        cnt.passes += 1
    else:  # the caller's A^T lam (a copy: u is updated in place)
        u = u0.clone()
    f = _fvalue(u, alpha, gamma, sums) if ftol is not None else math.nan
    band = min(band0, n)
    it = 0
    stop = "limit"
    for it in range(1, max_iter + 1):
        absu = u.abs()
        k = max(min(band, n), 1)
        step = n // 65536
        if step > 1 and k // step >= 16:
            # about k: the threshold from an even sample, then a mask (1 ms where top-k took 3-4 ms
            # at d = 602k); the band only shapes the Hessian, so its exact size does not matter
            mu_t = torch.kthvalue(absu[::step], k // step).values
            S = (absu <= mu_t).nonzero().squeeze(1)
            mu = float(mu_t)
            k = S.numel()
        else:
            vals, S = torch.topk(absu, k, largest=False)
            mu = float(vals.max())
        del absu
        if mu <= 0.0:
            mu = float(u.abs().max()) * 1e-12 + 1e-300
        if alpha is None:
            psi = torch.sign(u)
            psi[S] = (u[S] / mu).clamp(-1.0, 1.0)
            wS = torch.full((k,), 1.0 / mu, dtype=torch.float64, device=P.device)
        else:
            # alpha where u > 0, -gamma where u < 0: (alpha - gamma)/2 + sign(u) (alpha + gamma)/2 in
            # place (a torch.where over a fresh mask took 3 ms at d = 602k; at u = 0, a kink, any
            # value in [-gamma, alpha] is a subgradient, and the band resets it anyway)
            psi = torch.sign(u).mul_(half_w).add_(half_dl)
            aS, gS = alpha[S], gamma[S]
            psi[S] = torch.minimum(torch.maximum(-gS + (aS + gS) * (u[S] + mu) / (2 * mu), -gS), aS)
            wS = ((aS + gS) / (2 * mu)).double()
        g = P.matvec(psi).double()
        del psi
        cnt.passes += 1
        AS = P.columns(S)
        H = (AS * wS) @ AS.t()
        d = _newton_direction(g.cpu().numpy(), H.cpu().numpy(), beta_np, lam.cpu().numpy().copy())
        if not np.isfinite(d).all() or np.abs(d).max() == 0.0:
            stop = "stationary"
            break
        d_t = torch.from_numpy(d).to(P.device)
        neg = d_t < 0
        lam_np = lam.cpu().numpy()
        t_max = float(np.min(lam_np[d < 0] / -d[d < 0])) if (d < 0).any() else math.inf
        v = P.rmatvec(d_t)
        cnt.passes += 1
        t = _line_search(u, v, alpha, gamma, t_max, sums)
        if t <= 0.0:
            if band <= band_min:
                stop = "no descent"
                break
            band = max(band_min, band // 4)
            continue
        lam = lam + t * d_t
        if t >= t_max:  # a bound blocked the step: the blocking duals are exactly 0 from now on, else
            # they stay ~1e-17 above it, the next direction pushes them down again and Newton
            # stalls on steps of that length (measured: 2.4 % from the optimum, thousands of wrong signs)
            lam[neg & (lam <= 1e-12 * float(lam.abs().max()))] = 0.0
        lam = lam.clamp(min=0.0)
        c = float(-(beta @ lam))
        lam = lam / c  # stay exactly on -beta.lam = 1
        if it % _REFRESH == 0:
            u = P.rmatvec(lam)
            cnt.passes += 1
        else:  # the clamp moved lam by <= 1e-12 of its size: u follows lam to round-off
            u = u.add_(v, alpha=t).div_(c)
        if ftol is not None:  # f only serves this test (three passes' worth of sums at d = 602k)
            f_new = _fvalue(u, alpha, gamma, sums)
            done = band <= band_min and (f - f_new) <= ftol * abs(f)
            f = f_new
        else:
            done = False
        band = max(band_min, band // 3)
        if done:
            stop = "converged"
            break
    if why is not None:
        why["stop"] = stop
    return lam, u, it


#: u = A^T lam is updated along with lam, and recomputed by a pass every this many iterations.
_REFRESH = 8
