"""Sort-free search for the crossing point of a monotone piecewise-linear sum.

Both the exact line search of the dual Newton method and the certificate of the bounded LP ask
for the smallest t >= 0 with

    H(t) = sum_i p_i [tau_i <= t] + q_i min(t, tau_i)  >=  target        (p, q >= 0)

over up to d ~ 600k breakpoints. A full sort costs ~70 ms at d = 602k on a 2-core CPU; this
bracketing search evaluates H at a few sampled pivots per round (one pass each round over the
surviving breakpoints), keeps the bracket that holds the crossing, and sorts only the last few
thousand breakpoints. The answer is exact (the same as sorting everything).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

_FINAL_SORT = 16384
_PIVOTS = 63
_SAMPLE = 4096


def smallest_crossing(
    tau: torch.Tensor,
    p: torch.Tensor | None,
    q: torch.Tensor | None,
    target: float,
    clean: bool = False,
    check: bool = True,
) -> float:
    """Smallest t >= 0 with H(t) >= target; ``inf`` if H never reaches it.

    tau: (n,) breakpoints >= 0 (``inf`` allowed); p, q: (n,) non-negative weights or None (zero).
    Any float dtype, on any device. ``clean=True`` promises 0 < tau < inf everywhere.
    ``check=False`` skips the pass that proves no smaller t reaches the target (the line search
    only steers; certificates must keep the check, which makes a returned bound never too large).
    """
    if target <= 0.0:
        return 0.0
    n = tau.numel()
    has_p, has_q = p is not None, q is not None
    zero = torch.zeros((), dtype=tau.dtype, device=tau.device)
    p = zero.expand(n) if p is None else p
    q = zero.expand(n) if q is None else q
    # Elements at +inf never contribute p, and contribute q * t for every t: fold them in now.
    slope = 0.0
    if not clean:
        fin = torch.isfinite(tau)
        if not bool(fin.all()):
            slope = float(q[~fin].sum())
            tau, p, q = tau[fin], p[fin], q[fin]
    const = 0.0  # sum of p_i + q_i tau_i over breakpoints known to be <= the bracket's low end
    lo = 0.0
    # Breakpoints at 0 (or below, by round-off) are below every candidate t > 0.
    below = tau <= 0.0 if not clean else None
    if below is not None and bool(below.any()):
        const += float(p[below].sum())
        tau, p, q = tau[~below], p[~below], q[~below]
    hi = math.inf
    if tau.numel() > _FINAL_SORT:
        t = _log_histogram(tau, p, q, target, const, slope, has_p, has_q, check)
        if t is not None:
            return t
    gen = torch.Generator(device="cpu").manual_seed(12345) if tau.numel() > _FINAL_SORT else None
    while tau.numel() > _FINAL_SORT:
        idx = torch.randint(tau.numel(), (_SAMPLE,), generator=gen).to(tau.device)
        sample = torch.sort(tau[idx]).values
        pos = torch.linspace(0, _SAMPLE - 1, _PIVOTS + 2, device=tau.device)[1:-1].round().long()
        piv = torch.unique(sample[pos])  # sorted, distinct
        nb = piv.numel() + 1
        # Bucket k holds the breakpoints in (piv[k-1], piv[k]]; one pass for all pivots.
        bucket = torch.bucketize(tau, piv)
        sum_p = torch.bincount(bucket, weights=p, minlength=nb)
        sum_qt = torch.bincount(bucket, weights=q * tau, minlength=nb)
        sum_q = torch.bincount(bucket, weights=q, minlength=nb)
        below = torch.cumsum(sum_p + sum_qt, 0)[:-1]  # over buckets <= k, i.e. tau <= piv[k]
        above_q = q.sum() - torch.cumsum(sum_q, 0)[:-1]  # tau > piv[k]
        h = const + slope * piv + below + piv * above_q
        reached = (h >= target).nonzero()
        k = int(reached[0]) if reached.numel() else nb - 1
        keep = bucket == k
        if bool(keep.all()):  # all breakpoints tied in one bucket: finish by sorting
            break
        const += float((sum_p + sum_qt)[:k].sum())
        slope += float(sum_q[k + 1:].sum())
        lo = float(piv[k - 1]) if k > 0 else lo
        hi = float(piv[k]) if k < nb - 1 else hi
        tau, p, q = tau[keep], p[keep], q[keep]
    return _finish(tau, p, q, target, const, slope, lo, hi)


def concave_crossing(tau: torch.Tensor, q: torch.Tensor, target: float, max_steps: int = 40) -> float:
    """:func:`smallest_crossing` without p: the smallest t >= 0 with H(t) = sum_i q_i min(t, tau_i)
    >= target, by Newton's method from below, for the bounds a dual point proves.

    H is concave and increasing, so its tangent lies above it: each Newton step lands at or
    below the answer, the iterates rise monotonically to it (each one a valid lower bound), and
    on the last linear piece the step is exact. Each step is one pass over the n breakpoints
    (a few in-place operations on one buffer), ~5 steps in all, where the bracketing search needed
    ~100 ms of bucketing at d = 602k. Should it not settle in ``max_steps``, the bracketing
    search decides. tau >= 0 (``inf`` allowed), q >= 0; float64 for a certificate.
    """
    if target <= 0.0:
        return 0.0
    buf = torch.empty_like(tau)
    t = 0.0
    slope = float(q.sum(dtype=torch.float64))  # H'(0+): every breakpoint above 0 (those at 0 add nothing)
    h = 0.0
    for _ in range(max_steps):
        if slope <= 0.0:
            return math.inf  # H is flat from t on and below the target: never reached
        t_new = t + (target - h) / slope
        if not t_new > t:  # no progress left in float64: t is the answer to rounding
            return t
        t = t_new
        torch.clamp(tau, max=t, out=buf)
        h = float(torch.dot(buf, q))
        if h >= target:  # the tangent's root lies on H: exact (to rounding)
            return t
        # H'(t+) = sum of q_i over tau_i > t; counting the ties tau_i = t too only shortens the
        # next step (it stays below the answer): 1 where min(t, tau_i) = t, 0 below, in place
        slope = float(torch.dot(buf.sub_(t).sign_().add_(1.0), q))
    return smallest_crossing(tau, None, q, target)


def _finish(tau, p, q, target: float, const: float, slope: float, lo: float, hi: float) -> float:
    """Exact answer by sorting the remaining breakpoints, all in (lo, hi]; ``const`` and
    ``slope`` carry the contributions of the breakpoints below and above that bracket.

    A few thousand breakpoints on the CPU go through numpy: the same arithmetic at a fraction of
    torch's per-operation cost (the line search of a narrowed level ends here every iteration)."""
    ts: Any
    cum_p: Any
    cum_qt: Any
    cum_q: Any
    if tau.device.type == "cpu" and tau.numel() <= 4096:
        tn, pn, qn = (x.double().numpy() for x in (tau, p, q))
        o = np.argsort(tn, kind="stable")
        ts, qs = tn[o], qn[o]
        cum_p, cum_qt, cum_q = np.cumsum(pn[o]), np.cumsum(qs * ts), np.cumsum(qs)
    else:
        order = torch.argsort(tau)
        ts, qt = tau[order].double(), q[order].double()
        cum_p, cum_qt, cum_q = torch.cumsum(p[order].double(), 0), torch.cumsum(qt * ts, 0), torch.cumsum(qt, 0)
    size = ts.shape[0]
    q_total = float(cum_q[-1]) if size else 0.0
    # H just after the j-th breakpoint (inclusive): const + cum_p + cum_qt + t * (slope + q_total - cum_q)
    h_at = const + cum_p + cum_qt + ts * (slope + q_total - cum_q)
    hit = (h_at >= target).nonzero()[0] if isinstance(h_at, np.ndarray) else (h_at >= target).nonzero()
    j = int(hit[0]) if hit.shape[0] else size
    # On the open interval between breakpoint j-1 and j, H(t) = C + S t.
    if j > 0:
        c_lin = const + float(cum_p[j - 1]) + float(cum_qt[j - 1])
        s_lin = slope + q_total - float(cum_q[j - 1])
        left = float(ts[j - 1])
    else:
        c_lin, s_lin, left = const, slope + q_total, lo
    right = float(ts[j]) if j < size else hi
    if c_lin + s_lin * left >= target:
        return left
    if s_lin > 0.0:
        t = (target - c_lin) / s_lin
        if t <= right:
            return max(t, left)
    return right


def _h(tau, p, q, t: float, has_p: bool = True, has_q: bool = True) -> float:
    """H(t) over the given breakpoints (one pass)."""
    h = 0.0
    if has_p:
        h += float(torch.where(tau <= t, p, 0).sum(dtype=torch.float64))
    if has_q:
        h += float((q * torch.clamp(tau, max=t)).sum(dtype=torch.float64))
    return h


def _bucket_sums(k: torch.Tensor, w: torch.Tensor | None, bins: int) -> torch.Tensor:
    out = torch.zeros(bins, dtype=torch.float64, device=k.device)
    return out if w is None else out.index_add_(0, k, w.double() if w.dtype != torch.float64 else w)


def _log_histogram(tau, p, q, target: float, const: float, slope: float, has_p: bool, has_q: bool,
                   check: bool = True, bins: int = 4096) -> float | None:
    """One pass of log-spaced buckets, an exact finish on the three buckets around the crossing,
    and a check of the answer on all breakpoints; None when the check fails (rounding at a
    bucket edge), so that the caller's slower search decides."""
    lt = torch.log2(tau)
    a, b = float(lt.min()), float(lt.max())
    if not b > a:
        return None
    scale = (bins - 1) / (b - a)
    k = (lt - a).mul_(scale).clamp_(0, bins - 1).long()  # floor: the values are >= 0
    sp = _bucket_sums(k, p if has_p else None, bins)
    sqt = _bucket_sums(k, q * tau if has_q else None, bins)
    sq = _bucket_sums(k, q if has_q else None, bins)
    edges = torch.exp2(a + (torch.arange(bins, dtype=torch.float64, device=tau.device) + 1) / scale)
    h_edge = const + slope * edges + torch.cumsum(sp + sqt, 0) + edges * (float(sq.sum()) - torch.cumsum(sq, 0))
    hit = (h_edge >= target).nonzero()
    j = int(hit[0]) if hit.numel() else bins - 1
    lo_b, hi_b = max(j - 1, 0), min(j + 1, bins - 1)
    cand = (k >= lo_b) & (k <= hi_b)
    c2 = const + float((sp + sqt)[:lo_b].sum())
    s2 = slope + float(sq[hi_b + 1:].sum())
    t = _finish(tau[cand], p[cand], q[cand], target, c2, s2, 0.0, math.inf)
    if not math.isfinite(t):
        return None
    if not check:
        return t
    # nothing below the answer may reach the target (so a bound from it is never too large)
    below = math.nextafter(t, 0.0)
    if t > 0 and const + slope * below + _h(tau, p, q, below, has_p, has_q) >= target * (1 + 1e-12):
        return None
    return t
